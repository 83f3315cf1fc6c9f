"""Billing commands: `sync`, `lines`, `invoice`, and `invoices set-status|list`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from worker.app.charges import invoice_status_changed
from worker.app.invoicing import invoice_pending_lines
from worker.app.sync import sync_subscription
from worker.cli.options import IdOption, NamespaceOption, identifier_callback, timestamp_option
from worker.cli.output import FormatOption, emit, print_renderable
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
from worker.contract.events import InvoiceCreatedEvent
from worker.errors import InvalidInputError
from worker.infra.clock import utcnow
from worker.queue.publish import publish
from worker.store.invoices import SETTABLE_STATUSES, list_invoices, set_invoice_status
from worker.store.lines import list_lines

invoices_app = typer.Typer(help="Invoices.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Add the billing commands to the root `subsync` app."""
    root.command("sync")(sync)
    root.command("lines")(lines)
    root.command("invoice")(invoice)
    root.add_typer(invoices_app, name="invoices")


def sync(
    ctx: typer.Context,
    namespace: NamespaceOption,
    subscription_id: Annotated[str, typer.Option("--subscription", metavar="ID", callback=identifier_callback)],
    as_of: Annotated[datetime | None, timestamp_option("--as-of")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and print, write nothing.")] = False,
    invoice_after: Annotated[
        bool,
        typer.Option("--invoice", help="Then invoice the customer's pending lines (SPEC 8.3), as the worker does."),
    ] = False,
    fmt: FormatOption = None,
) -> None:
    """Run one sync now, in this process, and print the patches it applied (or would apply)."""

    runtime = get_runtime(ctx)
    engine = runtime.engine()
    result = sync_subscription(
        engine,
        namespace,
        subscription_id,
        as_of=as_of,
        dry_run=dry_run,
        max_target_lines=runtime.settings.max_target_lines,
    )
    data = sync_result_json(result)
    created: list[Any] = []
    if invoice_after and not dry_run and not result.subscription_deleted:
        created = invoice_pending_lines(engine, namespace, result.customer_id, as_of=as_of)
        data["invoices"] = [
            {"id": c.id, "currency": c.currency, "status": c.status, "line_ids": list(c.line_ids)} for c in created
        ]

    def table() -> None:
        print_renderable(patches_table(result))
        if created:
            print_renderable(created_invoices_table(created, "invoiced after sync"))

    emit(fmt, data, table=table)


def lines(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: Annotated[str | None, typer.Option("--customer", metavar="ID", callback=identifier_callback)] = None,
    subscription_id: Annotated[
        str | None, typer.Option("--subscription", metavar="ID", callback=identifier_callback)
    ] = None,
    include_deleted: Annotated[bool, typer.Option("--include-deleted")] = False,
    fmt: FormatOption = None,
) -> None:
    """List invoice lines of a customer or a subscription (split line groups: group, then children)."""

    if (customer_id is None) == (subscription_id is None):
        raise InvalidInputError("give exactly one of --customer and --subscription")
    with get_runtime(ctx).engine().connect() as conn:
        rows = list_lines(
            conn, namespace, customer_id=customer_id, subscription_id=subscription_id, include_deleted=include_deleted
        )
    owner = f"customer {customer_id}" if customer_id is not None else f"subscription {subscription_id}"
    emit(
        fmt,
        [line_json(r) for r in rows],
        table=lambda: print_renderable(lines_table(rows, f"{len(rows)} line(s) of {owner} in {namespace}")),
    )


def invoice(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: Annotated[str, typer.Option("--customer", metavar="ID", callback=identifier_callback)],
    as_of: Annotated[datetime | None, timestamp_option("--as-of")] = None,
    progressive: Annotated[
        bool, typer.Option("--progressive", help="Split usage lines whose service period contains the time.")
    ] = False,
    publish_event: Annotated[
        bool, typer.Option("--publish", help="Publish invoice.created for each new invoice (needs the broker).")
    ] = False,
    fmt: FormatOption = None,
) -> None:
    """Invoice pending lines: move what is due onto new draft invoices (one per currency)."""
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
    emit(fmt, created_invoices_json(created), table=lambda: print_renderable(created_invoices_table(created, title)))


@invoices_app.command("set-status")
def invoices_set_status(
    ctx: typer.Context,
    namespace: NamespaceOption,
    invoice_id: IdOption,
    status: Annotated[str, typer.Option("--status", help="draft, issued, paid or voided.")],
    fmt: FormatOption = None,
) -> None:
    """Move a standard invoice to draft, issued, paid or voided (immutable unless draft)."""
    if status not in SETTABLE_STATUSES:
        raise InvalidInputError(f"--status: must be one of {', '.join(SETTABLE_STATUSES)} (got {status!r})")
    with get_runtime(ctx).engine().begin() as conn:
        now = utcnow()
        row = set_invoice_status(conn, namespace, invoice_id, status, now)  # takes the customer lock
        invoice_status_changed(conn, namespace, row.customer_id, invoice_id, row.immutable, now)  # CREDITS §3.11
    emit(fmt, invoice_json(row, []), table=lambda: print_renderable(invoices_table([(row, [])], "invoice updated")))


@invoices_app.command("list")
def invoices_list(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: Annotated[str, typer.Option("--customer", metavar="ID", callback=identifier_callback)],
    fmt: FormatOption = None,
) -> None:
    """List a customer's invoices, newest first, with their validation issues."""
    with get_runtime(ctx).engine().connect() as conn:
        entries = list_invoices(conn, namespace, customer_id)
    emit(
        fmt,
        [invoice_json(row, issues) for row, issues in entries],
        table=lambda: print_renderable(invoices_table(entries, f"{len(entries)} invoice(s) of customer {customer_id}")),
    )
