"""`subsync credits grant|void|grants|balance` (docs/credits.md §2.3, JSON shapes of §2.4)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli.options import NamespaceOption, identifier_callback, text_callback, timestamp_option
from worker.cli.output import FormatOption, emit, print_table
from worker.cli.runtime import get_runtime
from worker.contract.text import format_decimal, format_optional_time, format_time
from worker.infra.clock import utcnow

if TYPE_CHECKING:
    from worker.store.credits import StoredGrant

app = typer.Typer(help="Customer credit grants and balances (docs/credits.md).", no_args_is_help=True)

CustomerOption = Annotated[
    str, typer.Option("--customer", metavar="ID", callback=identifier_callback, help="The customer.")
]


def grant_json(stored: StoredGrant, at: datetime) -> dict[str, Any]:
    g = stored.grant
    return {
        "id": g.id,
        "customer_id": stored.customer_id,
        "currency": g.currency,
        "amount": format_decimal(g.amount),
        "remaining": format_decimal(stored.remaining),
        "priority": g.priority,
        "feature_keys": sorted(g.feature_keys) if g.feature_keys is not None else None,
        "effective_at": format_time(g.effective_at),
        "expires_at": format_optional_time(g.expires_at),
        "status": g.status(at),
        "voided_at": format_optional_time(g.voided_at),
        "created_at": format_time(g.created_at),
    }


_GRANT_COLUMNS = ["id", "currency", "amount", "remaining", "priority", "features", "effective", "expires", "status"]


def _grant_rows(data: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            d["id"],
            d["currency"],
            d["amount"],
            d["remaining"],
            d["priority"],
            ", ".join(d["feature_keys"]) if d["feature_keys"] else "-",
            d["effective_at"],
            d["expires_at"] or "-",
            d["status"],
        ]
        for d in data
    ]


@app.command("grant")
def credits_grant(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: CustomerOption,
    currency: Annotated[str, typer.Option("--currency", metavar="CUR", help="ISO 4217 currency of the grant.")],
    amount: Annotated[
        str, typer.Option("--amount", metavar="D", help="Amount (> 0, at most the currency's decimals).")
    ],
    priority: Annotated[int, typer.Option("--priority", metavar="N", help="Lower is consumed first.")] = 1,
    effective_at: Annotated[
        datetime | None, timestamp_option("--effective-at", help="From when the grant counts (RFC 3339; default now).")
    ] = None,
    expires_at: Annotated[
        datetime | None,
        timestamp_option("--expires-at", help="When the grant stops counting (RFC 3339; default never)."),
    ] = None,
    features: Annotated[
        list[str] | None,
        typer.Option(
            "--feature", metavar="KEY", help="Only charges of this feature (repeatable).", callback=text_callback
        ),
    ] = None,
    grant_id: Annotated[
        str | None,
        typer.Option("--id", metavar="ID", help="The grant's id (idempotent: the same grant again writes nothing)."),
    ] = None,
    fmt: FormatOption = None,
) -> None:
    """Create a grant (it pays open advance at once when effective now)."""
    from worker.app.credits import GrantRequest, grant_credit, parse_amount  # lazy: SQLAlchemy (issue 14)

    request = GrantRequest(
        customer_id=customer_id,
        currency=currency,
        amount=parse_amount(amount, currency),
        priority=priority,
        effective_at=effective_at,
        expires_at=expires_at,
        feature_keys=tuple(features or ()),
        id=grant_id,
    )
    result = grant_credit(get_runtime(ctx).engine(), namespace, request)
    data = {**grant_json(result.grant, utcnow()), "backfilled": format_decimal(result.backfilled)}
    emit(
        fmt,
        data,
        table=lambda: print_table(
            f"grant {'created' if result.created else 'exists'} (backfilled {data['backfilled']})",
            _GRANT_COLUMNS,
            _grant_rows([data]),
        ),
    )


@app.command("void")
def credits_void(
    ctx: typer.Context,
    namespace: NamespaceOption,
    grant_id: Annotated[
        str, typer.Option("--grant", metavar="ID", callback=identifier_callback, help="The grant to void.")
    ],
    fmt: FormatOption = None,
) -> None:
    """Void a grant: it stops counting from now on."""
    from worker.app.credits import void_credit  # lazy: SQLAlchemy (start-up, issue 14)

    data = grant_json(void_credit(get_runtime(ctx).engine(), namespace, grant_id), utcnow())
    emit(fmt, data, table=lambda: print_table("grant voided", _GRANT_COLUMNS, _grant_rows([data])))


@app.command("grants")
def credits_grants(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: CustomerOption,
    include_voided: Annotated[bool, typer.Option("--include-voided", help="Also list voided grants.")] = False,
    fmt: FormatOption = None,
) -> None:
    """List a customer's grants, by currency then consumption order."""
    from worker.app.credits import customer_grants  # lazy: SQLAlchemy (start-up, issue 14)

    now = utcnow()
    grants = customer_grants(get_runtime(ctx).engine(), namespace, customer_id, include_voided=include_voided)
    data = [grant_json(g, now) for g in grants]
    emit(
        fmt,
        data,
        table=lambda: print_table(f"{len(data)} grant(s) of customer {customer_id}", _GRANT_COLUMNS, _grant_rows(data)),
    )


def balance_json(b: Any) -> dict[str, str]:
    return {
        "currency": b.currency,
        "available": format_decimal(b.available),
        "pending": format_decimal(b.pending),
        "expired": format_decimal(b.expired),
        "open_advance": format_decimal(b.open_advance),
        "balance": format_decimal(b.balance),
    }


@app.command("balance")
def credits_balance(
    ctx: typer.Context,
    namespace: NamespaceOption,
    customer_id: CustomerOption,
    as_of: Annotated[
        datetime | None, timestamp_option("--as-of", help="The balance at this time (RFC 3339; default now).")
    ] = None,
    fmt: FormatOption = None,
) -> None:
    """The customer's credit balance per currency (available − open advance)."""
    from worker.app.credits import customer_balance  # lazy: SQLAlchemy (start-up, issue 14)

    data = [balance_json(b) for b in customer_balance(get_runtime(ctx).engine(), namespace, customer_id, at=as_of)]
    emit(fmt, data, table=lambda: balance_table(data, f"balance of customer {customer_id}"))


def balance_table(data: list[dict[str, str]], title: str) -> None:
    print_table(
        title,
        ["currency", "available", "pending", "expired", "open advance", "balance"],
        [list(d.values()) for d in data],
    )
