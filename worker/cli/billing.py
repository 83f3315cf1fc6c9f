"""Billing commands: `sync`, `lines`, `invoice`, and `invoices set-status|list`."""

from datetime import datetime
from typing import Annotated, Any

import typer

from worker.cli.options import IdOption, InvoiceStatus, NamespaceOption, identifier_callback, timestamp_option
from worker.cli.output import FormatOption, WideOption, emit, print_spec
from worker.cli.presenters import (
    created_invoices_json,
    created_invoices_table,
    invoice_json,
    invoices_table,
    line_json,
    lines_table,
    patches_table,
    sync_result_json,
)
from worker.cli.runtime import get_runtime
from worker.errors import InvalidInputError

invoices_app = typer.Typer(help="Invoices.", no_args_is_help=True)

AS_OF_HELP = "Sync horizon (RFC 3339; default: now)."


def register(root: typer.Typer) -> None:
    """Add the billing commands to the root `subsync` app."""
    root.command("sync")(sync)
    root.command("lines")(lines)
    root.command("invoice")(invoice)
    root.add_typer(invoices_app, name="invoices")


def sync(
    ctx: typer.Context,
    namespace: NamespaceOption,
    subscription_id: Annotated[
        str,
        typer.Option("--subscription", metavar="ID", help="Subscription to sync.", callback=identifier_callback),
    ],
    as_of: Annotated[datetime | None, timestamp_option("--as-of", help=AS_OF_HELP)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and print, write nothing.")] = False,
    invoice_after: Annotated[
        bool,
        typer.Option("--invoice", help="Then invoice the customer's pending lines (SPEC 8.3), as the worker does."),
    ] = False,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Run one sync now, in this process, and print the patches it applied (or would apply)."""
    # lazy: the use cases import SQLAlchemy; loaded when the command runs, not for --help
    from worker.app.invoicing import invoice_pending_lines
    from worker.app.sync import sync_subscription

    runtime = get_runtime(ctx)
    engine = runtime.engine()
    result = sync_subscription(
        engine,
        namespace,
        subscription_id,
        as_of=as_of,
        dry_run=dry_run,
        max_target_lines=runtime.settings.max_target_lines,
        reuse=runtime.settings.reuse_decisions,
    )
    data = sync_result_json(result)
    created: list[Any] = []
    if invoice_after and not dry_run and not result.subscription_deleted:
        created = invoice_pending_lines(engine, namespace, result.customer_id, as_of=as_of)
        data["invoices"] = [
            {"id": c.id, "currency": c.currency, "status": c.status, "line_ids": list(c.line_ids)} for c in created
        ]

    def table() -> None:
        print_spec(patches_table(result), wide=wide)
        if created:
            print_spec(created_invoices_table(created, "invoiced after sync"), wide=wide)

    emit(fmt, data, table=table)


def lines(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: Annotated[
        str | None,
        typer.Option(
            "--customer",
            metavar="ID",
            help="The customer's lines (give --customer or --subscription, not both).",
            callback=identifier_callback,
        ),
    ] = None,
    subscription_id: Annotated[
        str | None,
        typer.Option(
            "--subscription",
            metavar="ID",
            help="The subscription's lines (give --customer or --subscription, not both).",
            callback=identifier_callback,
        ),
    ] = None,
    include_deleted: Annotated[bool, typer.Option("--include-deleted", help="Also list deleted lines.")] = False,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """List invoice lines of a customer or a subscription (split line groups: group, then children)."""
    if (customer_id is None) == (subscription_id is None):
        raise InvalidInputError("give exactly one of --customer and --subscription")
    # lazy: the store imports SQLAlchemy
    from worker.store.lines import list_lines

    with get_runtime(ctx).engine().connect() as conn:
        rows = list_lines(
            conn, namespace, customer_id=customer_id, subscription_id=subscription_id, include_deleted=include_deleted
        )
    owner = f"customer {customer_id}" if customer_id is not None else f"subscription {subscription_id}"
    emit(
        fmt,
        [line_json(r) for r in rows],
        table=lambda: print_spec(lines_table(rows, f"{len(rows)} line(s) of {owner} in {namespace}"), wide=wide),
    )


def invoice(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: Annotated[
        str, typer.Option("--customer", metavar="ID", help="Customer to invoice.", callback=identifier_callback)
    ],
    as_of: Annotated[
        datetime | None, timestamp_option("--as-of", help="Invoice what is due at this time (RFC 3339; default: now).")
    ] = None,
    progressive: Annotated[
        bool, typer.Option("--progressive", help="Split usage lines whose service period contains the time.")
    ] = False,
    publish_event: Annotated[
        bool, typer.Option("--publish", help="Publish invoice.created for each new invoice (needs the broker).")
    ] = False,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Invoice pending lines: move what is due onto new draft invoices (one per currency)."""
    # lazy: the use case imports SQLAlchemy, publishing imports Dramatiq
    from worker.app.invoicing import invoice_pending_lines
    from worker.contract.events import InvoiceCreatedEvent
    from worker.queue.publish import publish

    runtime = get_runtime(ctx)
    created = invoice_pending_lines(runtime.engine(), namespace, customer_id, as_of=as_of, progressive=progressive)
    if publish_event and created:
        for inv in created:
            publish(
                InvoiceCreatedEvent.new(namespace=namespace, invoice_id=inv.id, as_of=as_of), broker=runtime.broker()
            )
    title = f"{len(created)} invoice(s) created for customer {customer_id}" + (
        " (nothing was due)" if not created else ""
    )
    emit(
        fmt,
        created_invoices_json(created),
        table=lambda: print_spec(created_invoices_table(created, title), wide=wide),
    )


@invoices_app.command("set-status")
def invoices_set_status(
    ctx: typer.Context,
    namespace: NamespaceOption,
    invoice_id: IdOption,
    status: Annotated[InvoiceStatus, typer.Option("--status", help="The new status (immutable unless draft).")],
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Move a standard invoice to draft, issued, paid or voided (immutable unless draft)."""
    # lazy: the use case imports SQLAlchemy
    from worker.app.invoices import change_invoice_status

    row = change_invoice_status(get_runtime(ctx).engine(), namespace, invoice_id, status.value)
    emit(
        fmt,
        invoice_json(row, []),
        table=lambda: print_spec(invoices_table([(row, [])], "invoice updated"), wide=wide),
    )


@invoices_app.command("list")
def invoices_list(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: Annotated[
        str, typer.Option("--customer", metavar="ID", help="The customer's invoices.", callback=identifier_callback)
    ],
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """List a customer's invoices, newest first, with their validation issues."""
    # lazy: the store imports SQLAlchemy
    from worker.store.invoices import list_invoices

    with get_runtime(ctx).engine().connect() as conn:
        entries = list_invoices(conn, namespace, customer_id)
    emit(
        fmt,
        [invoice_json(row, issues) for row, issues in entries],
        table=lambda: print_spec(
            invoices_table(entries, f"{len(entries)} invoice(s) of customer {customer_id}"), wide=wide
        ),
    )
