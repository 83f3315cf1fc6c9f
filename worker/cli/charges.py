"""`subsync charges list|advance|set-quantity` (docs/credits.md §2.3, JSON shapes of §2.4)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import typer

from worker.cli.options import NamespaceOption, identifier_callback, timestamp_option
from worker.cli.output import Column, FormatOption, WideOption, emit, print_table
from worker.cli.presenters import json_value, period_json
from worker.cli.runtime import get_runtime
from worker.contract.text import format_decimal, format_optional_time, format_time
from worker.errors import InvalidInputError, SubsyncError
from worker.infra.clock import utcnow

app = typer.Typer(help="Charges of credit-settled subscriptions (docs/credits.md).", no_args_is_help=True)

CustomerOption = Annotated[str, typer.Option("--customer", metavar="ID", callback=identifier_callback)]


def _num(value: Any) -> str | None:
    return None if value is None else format_decimal(Decimal(value))


def _discounts(value: Any) -> dict[str, Any]:
    value = value or {}
    return {"percentage": json_value(value.get("percentage")), "usage": json_value(value.get("usage"))}


def booked_at(row: Any) -> datetime:
    """docs/credits.md §3.6: the service start of a flat in-advance charge, the service end otherwise."""
    price = row.price or {}
    if row.type == "flat_fee" and price.get("payment_term", "in_advance") == "in_advance":
        return row.service_period_start  # type: ignore[no-any-return]
    return row.service_period_end  # type: ignore[no-any-return]


def charge_json(entry: tuple[Any, str | None, list[tuple[Any, list[Any]]]]) -> dict[str, Any]:
    """One charge in the docs/credits.md §2.4 shape, with its runs and their allocation rows."""
    row, line_id, runs = entry
    return {
        "id": row.id,
        "type": row.type,
        "settlement_mode": row.settlement_mode,
        "status": row.status,
        "unique_reference_id": row.unique_reference_id,
        "customer_id": row.customer_id,
        "subscription": {
            "subscription_id": row.subscription_id,
            "phase_id": row.subscription_phase_id,
            "item_id": row.subscription_item_id,
        },
        "currency": row.currency,
        "name": row.name,
        "description": row.description,
        "feature_key": row.feature_key,
        "price": json_value(row.price),
        "discounts": _discounts(row.discounts),
        "tax_config": row.tax_config,
        "annotations": row.annotations or {},
        "service_period": period_json(row.service_period_start, row.service_period_end),
        "full_service_period": period_json(row.full_service_period_start, row.full_service_period_end),
        "billing_period": period_json(row.billing_period_start, row.billing_period_end),
        "invoice_at": format_time(row.invoice_at),
        "booked_at": format_time(booked_at(row)),
        "advance_after": format_optional_time(row.advance_after),
        "amount_before_proration": _num(row.amount_before_proration),
        "amount_after_proration": _num(row.amount_after_proration),
        "quantity": _num(row.quantity),
        "rated_amount": _num(row.rated_amount),
        "line_id": line_id,
        "runs": [
            {
                "id": run.id,
                "amount": _num(run.amount),
                "discounts_total": _num(run.discounts_total),
                "credits_total": _num(run.credits_total),
                "total": _num(run.total),
                "quantity": _num(run.quantity),
                "invoice_id": run.invoice_id,
                "line_id": run.line_id,
                "booked_at": format_time(run.booked_at),
                "deleted": run.deleted_at is not None,
                "allocations": [
                    {
                        "id": a.id,
                        "seq": a.seq,
                        "kind": a.kind,
                        "grant_id": a.grant_id,
                        "amount": _num(a.amount),
                        "reverses_id": a.reverses_id,
                        "backfills_id": a.backfills_id,
                        "booked_at": format_time(a.booked_at),
                    }
                    for a in allocations
                ],
            }
            for run, allocations in runs
        ],
        "deleted": row.deleted_at is not None,
    }


def _day(text: str | None) -> str:
    return "-" if text is None else text.removesuffix("T00:00:00Z")  # as the lines table prints periods


def charges_table(data: list[dict[str, Any]], title: str, *, wide: bool = False) -> None:
    """Three tables that each fit an 80-column terminal like the lines table (ids never wrap, rows stay told
    apart): the charges (identity, status, service period, amount, id), their live runs (`credited`: the
    run's `credits_total`, paid from credit grants; `to pay`: its `total`, left for an invoice), and the
    runs' allocation rows (docs/credits.md §3.7: `allocation`, `correction`, `backfill`; grant `-` for an
    advance). Every other field is in the JSON shape."""
    subscriptions = {c["subscription"]["subscription_id"] for c in data}
    prefix = f"{next(iter(subscriptions))}/" if len(subscriptions) == 1 and None not in subscriptions else ""
    if prefix:  # one subscription: its id heads every identity, say it once in the title (as lines do)
        title = f"{title} — identities below are under {prefix}"

    def identity(c: dict[str, Any]) -> str:
        return str(c["unique_reference_id"]).removeprefix(prefix)

    charges = [
        [
            identity(c),
            c["status"] + (" (deleted)" if c["deleted"] else ""),
            f"{_day(c['service_period']['from'])} → {_day(c['service_period']['to'])}",
            c["amount_after_proration"] or c["rated_amount"] or "-",
            c["id"],
        ]
        for c in data
    ]
    columns = [
        Column("charge", "id"),
        Column("status"),
        Column("service period", "text"),
        Column("amount", "number"),
        Column("id", "id"),
    ]
    print_table(title, columns, charges, wide=wide)
    runs = [(c, run) for c in data for run in c["runs"] if not run["deleted"]]
    if not runs:
        return
    invoiced = any(run["invoice_id"] for _, run in runs)
    run_rows = [
        [
            identity(c),
            run["id"],
            _day(run["booked_at"]),
            run["amount"] or "-",
            run["credits_total"] or "-",
            run["total"] or "-",
            *([run["invoice_id"] or "-"] if invoiced else []),
        ]
        for c, run in runs
    ]
    run_columns = [
        Column("charge", "id"),
        Column("run", "id"),
        Column("booked", "time"),
        Column("amount", "number"),
        Column("credited", "number"),
        Column("to pay", "number"),
        *([Column("invoice", "id")] if invoiced else []),
    ]
    caption = "credited: the run's credits_total, paid from credit grants; to pay: its total, left for an invoice"
    print_table(f"{len(runs)} run(s)", run_columns, run_rows, wide=wide, caption=caption)
    allocations = [
        [run["id"], a["id"], a["kind"], a["grant_id"] or "-", a["amount"]]
        for _, run in runs
        for a in run["allocations"]
    ]
    if allocations:
        alloc_columns = [
            Column("run", "id"),
            Column("allocation", "id"),
            Column("kind"),
            Column("grant", "id"),
            Column("amount", "number"),
        ]
        print_table(f"{len(allocations)} allocation row(s)", alloc_columns, allocations, wide=wide)


@app.command("list")
def charges_list(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: Annotated[
        str | None,
        typer.Option("--customer", metavar="ID", callback=identifier_callback, help="The customer's charges."),
    ] = None,
    subscription_id: Annotated[
        str | None,
        typer.Option("--subscription", metavar="ID", callback=identifier_callback, help="The subscription's charges."),
    ] = None,
    include_deleted: Annotated[bool, typer.Option("--include-deleted", help="Also list deleted charges.")] = False,
    fmt: FormatOption = None,
    wide: WideOption = False,
) -> None:
    """List charges with their runs and allocation rows."""
    if (customer_id is None) == (subscription_id is None):
        raise InvalidInputError("give exactly one of --customer and --subscription")
    from worker.app.charges import list_charges  # lazy: the use cases import SQLAlchemy (start-up, issue 14)

    entries = list_charges(
        get_runtime(ctx).engine(),
        namespace,
        customer_id=customer_id,
        subscription_id=subscription_id,
        include_deleted=include_deleted,
    )
    data = [charge_json(e) for e in entries]
    emit(fmt, data, table=lambda: charges_table(data, f"{len(data)} charge(s) in {namespace}", wide=wide))


@app.command("advance")
def charges_advance(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: Annotated[
        str | None,
        typer.Option(
            "--customer", metavar="ID", callback=identifier_callback, help="Only this customer's due charges."
        ),
    ] = None,
    as_of: Annotated[
        datetime | None, timestamp_option("--as-of", help="Advance as of this time (RFC 3339; default now).")
    ] = None,
    fmt: FormatOption = None,
) -> None:
    """Advance due charges now, in this process (every customer with a due charge without --customer)."""
    from worker.app.charges import advance_customer, advance_namespace  # lazy: SQLAlchemy (start-up, issue 14)

    engine = get_runtime(ctx).engine()
    at = as_of or utcnow()
    failures: list[tuple[str, str]] = []
    if customer_id is not None:
        changes = [(customer_id, c) for c in advance_customer(engine, namespace, customer_id, as_of=at)]
    else:
        report = advance_namespace(engine, namespace, as_of=at)
        changes = [(c.customer_id, c.change) for c in report.changes]
        failures = report.failures
    rows: list[dict[str, Any]] = [
        {
            "customer_id": cid,
            "charge_id": c.charge_id,
            "unique_reference_id": c.unique_reference_id,
            "status_before": c.status_before,
            "status": c.status,
            "run_id": c.run_id,
        }
        for cid, c in changes
    ]
    data = {"as_of": format_time(at), "changes": rows}
    emit(
        fmt,
        data,
        table=lambda: print_table(
            f"advanced as of {data['as_of']}: {len(changes)} change(s)",
            ["customer", "unique reference id", "before", "after", "run"],
            [
                [d["customer_id"], d["unique_reference_id"], d["status_before"], d["status"], d["run_id"] or "-"]
                for d in rows
            ],
        ),
    )
    if failures:
        raise _AdvanceFailed(failures)


class _AdvanceFailed(SubsyncError):
    """Some customer's advance failed; the others are committed (docs/credits.md §2.3 exit 1)."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        super().__init__(f"advance failed for {len(failures)} customer(s)")
        self.failures = failures

    def report(self) -> list[str]:
        return [f"customer {cid}: {message}" for cid, message in self.failures]


def parse_quantity(text: str) -> Decimal:
    """`--quantity`: a non-negative decimal string by the rule of every interface (docs/contract.md §3: plain,
    ASCII digits, at most 38 digits; docs/credits.md §2.3, exit 2)."""
    from worker.contract.fields import parse_plain_decimal  # lazy: pydantic (start-up, issue 14)

    try:
        value = parse_plain_decimal(text)
    except ValueError as exc:
        raise InvalidInputError(f"--quantity: {text!r} {exc}") from None
    if value < 0:
        raise InvalidInputError(f"--quantity: must be a non-negative decimal (got {text})")
    return value


@app.command("set-quantity")
def charges_set_quantity(
    ctx: typer.Context,
    namespace: NamespaceOption,
    charge_id: Annotated[
        str, typer.Option("--charge", metavar="ID", callback=identifier_callback, help="The usage-based charge.")
    ],
    quantity: Annotated[
        str, typer.Option("--quantity", metavar="Q", help="The usage of its service period (a non-negative decimal).")
    ],
    fmt: FormatOption = None,
) -> None:
    """Supply the usage of a usage-based charge whose service period has ended."""
    q = parse_quantity(quantity)
    from worker.app.charges import list_charges, set_quantity  # lazy: SQLAlchemy (start-up, issue 14)

    engine = get_runtime(ctx).engine()
    set_quantity(engine, namespace, charge_id, q)
    (entry,) = list_charges(engine, namespace, charge_ids=[charge_id], include_deleted=True)
    data = charge_json(entry)
    emit(fmt, data, table=lambda: charges_table([data], f"charge {charge_id}"))
