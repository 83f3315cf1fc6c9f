"""`subsync customers`: `upsert` one customer from options, `apply` customer records in bulk (docs/contract.md §5)."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli import bulk
from worker.cli.options import IdOption, NamespaceOption, text_callback, timestamp_option
from worker.cli.output import FormatOption, WideOption, emit, print_record
from worker.cli.runtime import get_runtime
from worker.errors import InvalidInputError

if TYPE_CHECKING:
    from worker.store.customers import Customer

app = typer.Typer(help="Customers.", no_args_is_help=True)


@app.command("upsert")
def customers_upsert(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: IdOption,
    name: Annotated[
        str | None, typer.Option("--name", help="Display name (kept when omitted).", callback=text_callback)
    ] = None,
    deleted_at: Annotated[
        datetime | None, timestamp_option("--deleted-at", help="Soft-delete time (RFC 3339).")
    ] = None,
    undelete: Annotated[bool, typer.Option("--undelete", help="Clear the soft-delete time.")] = False,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Write a customer: only what is given changes (a deleted customer stays deleted unless --undelete)."""
    # lazy: the use case imports SQLAlchemy; loaded when the command runs, not for --help
    from worker.app.subscriptions import upsert_customer

    if undelete and deleted_at is not None:
        raise InvalidInputError("--undelete and --deleted-at cannot be used together")
    customer = upsert_customer(
        get_runtime(ctx).engine(), namespace, customer_id, name=name, deleted_at=deleted_at, undelete=undelete
    )
    data = customer.to_json()
    times = ("deleted_at", "created_at", "updated_at")
    emit(fmt, data, table=lambda: print_record("customer", data, times=times, wide=wide))


#: A file of customer records (JSON lines) may be large; each record is checked against its own limit.
MAX_FILE_BYTES = 256 * 1024 * 1024


def _apply_record(engine: Any, raw: bytes) -> "tuple[Customer, bool]":
    """Validate one record and upsert it in its own transaction: the customer, and whether it is new."""
    # lazy: the record model (pydantic) and the use case (SQLAlchemy)
    from worker.app.subscriptions import upsert_customer
    from worker.contract.customers import parse_customer

    record = parse_customer(raw)
    customer = upsert_customer(
        engine, record.namespace, record.id, name=record.name, deleted_at=record.deleted_at, undelete=record.undelete
    )
    return customer, customer.created_at == customer.updated_at


@app.command("apply")
def customers_apply(
    ctx: typer.Context,
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE...",
            help="Customer records (JSON objects with namespace, id, and optionally name and deleted_at): "
            "files of one object or of JSON lines, folders (their *.json and *.jsonl), or '-' for stdin.",
        ),
    ],
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """Insert or update customers from JSON records, one transaction each.

    Only what a record gives changes: no name keeps the stored name; no deleted_at keeps the stored
    deletion, a time soft-deletes, null undeletes. One record prints the customer; several are applied
    one transaction each, valid ones even when others are invalid; a report lists each, and the command
    exits 1 when any failed."""
    sources, many = bulk.sources(files, MAX_FILE_BYTES, patterns=("*.json", "*.jsonl"), lines_in_files=True)
    engine = get_runtime(ctx).engine()
    if not many:
        customer, _ = _apply_record(engine, sources[0].raw or b"")
        data = customer.to_json()
        times = ("deleted_at", "created_at", "updated_at")
        emit(fmt, data, table=lambda: print_record("customer", data, times=times, wide=wide))
        return

    def apply_one(source: bulk.Source) -> bulk.Applied:
        customer, created = _apply_record(engine, source.raw or b"")
        return {"result": "created" if created else "updated", "namespace": customer.namespace, "id": customer.id}

    bulk.apply_all(
        sources, apply_one, command="customers apply", noun="record", identity="customer", fmt=fmt, wide=wide
    )
