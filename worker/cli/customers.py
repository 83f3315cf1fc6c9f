"""`subsync customers`."""

from datetime import datetime
from typing import Annotated

import typer

from worker.cli.options import IdOption, NamespaceOption, text_callback, timestamp_option
from worker.cli.output import FormatOption, WideOption, emit, print_record
from worker.cli.runtime import get_runtime
from worker.errors import InvalidInputError

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
