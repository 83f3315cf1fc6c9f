"""The `subsync` command line (CONTRACT §5).

Commands are plain functions registered on `app` or on one of the group apps below
(`db_app`, `customers_app`, `subscriptions_app`, `invoices_app`). Shared plumbing — the
Runtime (settings, database, broker), output formats, option types and error handling —
is in `worker.cli_support`. The queue commands (demo, worker, scheduler, publish, status,
dead-letters) are in `worker.cli_worker`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli_support import (
    COMMAND_WORDS_KEY,
    FormatOption,
    IdOption,
    NamespaceOption,
    Runtime,
    SubsyncGroup,
    emit,
    error_report,
    get_runtime,
    identifier_callback,
    print_error_lines,
    print_renderable,
    print_table,
    timestamp_option,
)
from worker.cli_worker import register as register_queue_commands
from worker.config import load_settings
from worker.documents import MAX_DOCUMENT_BYTES, DocumentError, Problem, parse_document, to_document
from worker.errors import InvalidInputError, NotFoundError
from worker.formatting import format_optional_time
from worker.logging import configure_logging, get_logger
from worker.store.customers import upsert_customer
from worker.store.subscriptions import StoredSubscription, apply_subscription, delete_subscription, get_subscription

log = get_logger("worker.cli")

app = typer.Typer(
    name="subsync",
    cls=SubsyncGroup,
    help="Keep billing invoice lines in step with subscriptions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
customers_app = typer.Typer(help="Customers.", no_args_is_help=True)
subscriptions_app = typer.Typer(help="Subscription documents.", no_args_is_help=True)
invoices_app = typer.Typer(help="Invoices.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(customers_app, name="customers")
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(invoices_app, name="invoices")


@app.callback()
def root(ctx: typer.Context) -> None:
    """Configure logging, read the settings and say which database and broker are used."""
    configure_logging("console" if sys.stderr.isatty() else "json")
    settings = load_settings()
    configure_logging(settings.effective_log_format)
    runtime = Runtime(settings)
    ctx.obj = runtime
    ctx.call_on_close(runtime.close)
    runtime.announce(_command_path(ctx))


def _command_path(ctx: typer.Context) -> str:
    """`subscriptions get` for `subsync subscriptions get --namespace …` (for the log line)."""
    words = list(ctx.meta.get(COMMAND_WORDS_KEY, [])) or [ctx.invoked_subcommand or ""]
    return " ".join(words[:2] if words[0] in _GROUPS else words[:1])


_GROUPS = {"db", "customers", "subscriptions", "invoices", "dead-letters"}


def main() -> None:
    """Console-script entry point: usage errors become one `error:` line (exit 2)."""
    raise SystemExit(run(sys.argv[1:]))


def run(args: Sequence[str]) -> int:
    try:
        result = app(args=list(args), prog_name="subsync", standalone_mode=False)
    except typer.Abort:
        print_error_lines(["aborted"])
        return 1
    except Exception as exc:  # usage errors (click exceptions) and anything that escaped the group
        format_message = getattr(exc, "format_message", None)
        exit_code = getattr(exc, "exit_code", None)
        if callable(format_message) and isinstance(exit_code, int):
            message = str(format_message()).strip()
            if message:  # empty when the help was shown instead (no arguments given)
                command = getattr(getattr(exc, "ctx", None), "command_path", "subsync")
                hint = f" (see '{command} --help')" if exit_code == 2 else ""
                print_error_lines([f"{message}{hint}"])
            return exit_code
        code, lines = error_report(exc)
        print_error_lines(lines)
        return code
    return result if isinstance(result, int) else 0


# --- db ----------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Run migrations to head."""
    from worker import migrate

    url = get_runtime(ctx).database_url(migrate_embedded=False)
    revision = migrate.upgrade(url)
    log.info("database schema is up to date", revision=revision)


@db_app.command("downgrade")
def db_downgrade(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", metavar="REV", help="Target revision ('base' drops everything).")],
) -> None:
    """Migrate down to a revision."""
    from worker import migrate

    url = get_runtime(ctx).database_url(migrate_embedded=False)
    revision = migrate.downgrade(url, to)
    log.info("database schema downgraded", revision=revision or "base")


# --- customers ---------------------------------------------------------------------------------


@customers_app.command("upsert")
def customers_upsert(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: IdOption,
    name: Annotated[str | None, typer.Option("--name", help="Display name (kept when omitted).")] = None,
    deleted_at: Annotated[
        datetime | None, timestamp_option("--deleted-at", help="Soft-delete time (RFC 3339).")
    ] = None,
    undelete: Annotated[bool, typer.Option("--undelete", help="Clear the soft-delete time.")] = False,
    fmt: FormatOption = None,
) -> None:
    """Write a customer: only what is given changes (a deleted customer stays deleted unless --undelete)."""
    if name is not None and len(name) > 1024:
        raise InvalidInputError("--name must be at most 1024 characters")
    if undelete and deleted_at is not None:
        raise InvalidInputError("--undelete and --deleted-at cannot be used together")
    with get_runtime(ctx).engine().begin() as conn:
        customer = upsert_customer(conn, namespace, customer_id, name=name, deleted_at=deleted_at, undelete=undelete)
    data = customer.to_json()
    emit(fmt, data, table=lambda: print_table("customer", list(data), [list(data.values())]))


# --- subscriptions -----------------------------------------------------------------------------


def _read_document(file: str) -> bytes:
    try:
        if file == "-":
            return sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
        with Path(file).open("rb") as handle:
            return handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {file}: {exc.strerror or exc}") from None


def _print_document(fmt: Any, stored: StoredSubscription) -> None:
    data = to_document(stored.document)

    def table() -> None:
        title = (
            f"{data['namespace']}/{data['id']}  customer {data['customer_id']}  {data['currency']}"
            f"  {data['billing_cadence']}  {data['active_from']} → {data['active_to'] or '∞'}"
        )
        if stored.deleted_at is not None:
            title += f"  (deleted {format_optional_time(stored.deleted_at)})"
        rows = []
        for phase in data["phases"]:
            for key, versions in phase["items"].items():
                for index, version in enumerate(versions):
                    price = version["rate_card"]["price"]
                    rows.append(
                        [
                            phase["key"],
                            key,
                            f"v[{index}]",
                            version["id"],
                            version["active_from"],
                            version["active_to"] or "",
                            version["rate_card"]["billing_cadence"] or "one-time",
                            _price_summary(price),
                        ]
                    )
            if not phase["items"]:
                rows.append([phase["key"], "", "", "", phase["active_from"], "", "", ""])
        print_table(title, ["phase", "item", "version", "item id", "from", "to", "cadence", "price"], rows)

    emit(fmt, data, table=table)


def _price_summary(price: dict[str, Any] | None) -> str:
    if price is None:
        return "-"
    details = {k: v for k, v in price.items() if k not in ("type", "tiers")}
    text = str(price["type"]) + "".join(f" {k}={v}" for k, v in details.items())
    if "tiers" in price:
        text += f" ({len(price['tiers'])} tiers)"
    return text


@subscriptions_app.command("apply")
def subscriptions_apply(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="Subscription document (JSON); '-' reads stdin.")],
    fmt: FormatOption = None,
) -> None:
    """Validate a subscription document and insert or replace the subscription."""
    raw = _read_document(file)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise DocumentError([Problem("", f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} KiB")])
    document = parse_document(raw)
    with get_runtime(ctx).engine().begin() as conn:
        stored = apply_subscription(conn, document)
    log.info(
        "subscription created" if stored.created else "subscription replaced",
        namespace=stored.document.namespace,
        subscription_id=stored.document.id,
    )
    _print_document(fmt, stored)


@subscriptions_app.command("get")
def subscriptions_get(
    ctx: typer.Context, namespace: NamespaceOption, subscription_id: IdOption, fmt: FormatOption = None
) -> None:
    """Print the stored subscription document."""
    with get_runtime(ctx).engine().connect() as conn:
        stored = get_subscription(conn, namespace, subscription_id)
    if stored is None:
        raise NotFoundError(f"subscription {subscription_id!r} does not exist in namespace {namespace!r}")
    if stored.deleted_at is not None:
        log.warning("subscription is soft-deleted", deleted_at=format_optional_time(stored.deleted_at))
    _print_document(fmt, stored)


@subscriptions_app.command("delete")
def subscriptions_delete(
    ctx: typer.Context,
    namespace: NamespaceOption,
    subscription_id: IdOption,
    at: Annotated[datetime | None, timestamp_option("--at", help="Deletion time (default: now).")] = None,
    fmt: FormatOption = None,
) -> None:
    """Soft-delete a subscription."""
    with get_runtime(ctx).engine().begin() as conn:
        deleted_at = delete_subscription(conn, namespace, subscription_id, at)
    data = {"namespace": namespace, "id": subscription_id, "deleted_at": format_optional_time(deleted_at)}
    emit(fmt, data, table=lambda: print_table("deleted subscription", list(data), [list(data.values())]))


# --- sync and invoices ------------------------------------------------------------------------


@app.command("sync")
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
    from worker.presenters import created_invoices_table, patches_table, sync_result_json
    from worker.sync import sync_subscription

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
        from worker.invoicing import invoice_pending_lines

        created = invoice_pending_lines(engine, namespace, result.customer_id, as_of=as_of)
        data["invoices"] = [
            {"id": c.id, "currency": c.currency, "status": c.status, "line_ids": list(c.line_ids)} for c in created
        ]

    def table() -> None:
        print_renderable(patches_table(result))
        if created:
            print_renderable(created_invoices_table(created, "invoiced after sync"))

    emit(fmt, data, table=table)


@app.command("lines")
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
    from worker.presenters import line_json, lines_table
    from worker.store.lines import list_lines

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


@app.command("invoice")
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
    from worker.invoicing import invoice_pending_lines
    from worker.presenters import created_invoices_json, created_invoices_table

    runtime = get_runtime(ctx)
    created = invoice_pending_lines(runtime.engine(), namespace, customer_id, as_of=as_of, progressive=progressive)
    if publish_event and created:
        from worker.events import InvoiceCreatedEvent, publish

        for inv in created:
            publish(InvoiceCreatedEvent.new(namespace=namespace, invoice_id=inv.id, as_of=as_of))
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
    from worker.presenters import invoice_json, invoices_table
    from worker.store.invoices import SETTABLE_STATUSES, set_invoice_status

    if status not in SETTABLE_STATUSES:
        raise InvalidInputError(f"--status: must be one of {', '.join(SETTABLE_STATUSES)} (got {status!r})")
    with get_runtime(ctx).engine().begin() as conn:
        row = set_invoice_status(conn, namespace, invoice_id, status, datetime.now(UTC))
    emit(fmt, invoice_json(row, []), table=lambda: print_renderable(invoices_table([(row, [])], "invoice updated")))


@invoices_app.command("list")
def invoices_list(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: Annotated[str, typer.Option("--customer", metavar="ID", callback=identifier_callback)],
    fmt: FormatOption = None,
) -> None:
    """List a customer's invoices, newest first, with their validation issues."""
    from worker.presenters import invoice_json, invoices_table
    from worker.store.invoices import list_invoices

    with get_runtime(ctx).engine().connect() as conn:
        entries = list_invoices(conn, namespace, customer_id)
    emit(
        fmt,
        [invoice_json(row, issues) for row, issues in entries],
        table=lambda: print_renderable(invoices_table(entries, f"{len(entries)} invoice(s) of customer {customer_id}")),
    )


# --- queue commands: demo, worker, scheduler, publish, status, dead-letters (worker/cli_worker.py)

register_queue_commands(app)
