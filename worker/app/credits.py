"""Credit use cases (docs/credits.md §2.3, §3.8-§3.9): grant (with backfill of open advance), void, list, balance.
Writers take the customer lock for their whole transaction (docs/credits.md §3.15); readers do not."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine

from worker.contract.fields import is_valid_id, parse_plain_decimal
from worker.domain.credit_allocation import Balance, Grant
from worker.domain.currencies import is_known_currency
from worker.domain.money import currency_precision, format_decimal
from worker.errors import ConflictError, InvalidInputError, NotFoundError
from worker.infra.clock import utcnow
from worker.infra.ids import new_id
from worker.infra.logging import get_logger
from worker.store.credits import (
    StoredGrant,
    balances,
    get_grant,
    insert_allocation_rows,
    insert_grant,
    list_grants,
    load_ledger,
    void_grant,
)
from worker.store.customers import get_customer
from worker.store.db import run_transaction
from worker.store.locks import lock_customer

log = get_logger("worker.app.credits")

MAX_PRIORITY = 2147483647


@dataclass(frozen=True, slots=True)
class GrantRequest:
    customer_id: str
    currency: str
    amount: Decimal
    priority: int = 1
    effective_at: datetime | None = None
    expires_at: datetime | None = None
    feature_keys: tuple[str, ...] = ()
    id: str | None = None


@dataclass(frozen=True, slots=True)
class GrantResult:
    grant: StoredGrant
    backfilled: Decimal
    created: bool


def parse_amount(text: str, currency: str) -> Decimal:
    """docs/credits.md §2.3 `--amount`: a decimal string by the rule of every interface (docs/contract.md §3:
    plain, ASCII digits, at most 38 digits), `> 0`, with at most the currency's decimals (exit 2)."""
    if not is_known_currency(currency):
        raise InvalidInputError(f"--currency: {currency!r} is not an ISO 4217 currency code")
    try:
        amount = parse_plain_decimal(text)
    except ValueError as exc:
        raise InvalidInputError(f"--amount: {text!r} {exc}") from None
    if amount <= 0:
        raise InvalidInputError(f"--amount: must be greater than 0 (got {text})")
    places = currency_precision(currency)
    if len(format_decimal(amount).partition(".")[2]) > places:
        raise InvalidInputError(f"--amount: {currency} allows at most {places} decimal places")
    return amount


def _validate(request: GrantRequest, effective_at: datetime) -> None:
    if not 0 <= request.priority <= MAX_PRIORITY:
        raise InvalidInputError(f"--priority: must be between 0 and {MAX_PRIORITY} (got {request.priority})")
    if request.expires_at is not None and request.expires_at <= effective_at:
        raise InvalidInputError("--expires-at: must be after --effective-at")
    for key in request.feature_keys:
        if not key.strip():
            raise InvalidInputError("--feature: must not be empty")
    if len(set(request.feature_keys)) != len(request.feature_keys):
        raise InvalidInputError("--feature: each feature key may be given once")
    if request.id is not None and not is_valid_id(request.id):
        raise InvalidInputError(f"--id: {request.id!r} is not a valid id")


def _require_live_customer(conn: Connection, namespace: str, customer_id: str, *, live: bool) -> None:
    customer = get_customer(conn, namespace, customer_id)
    if customer is None:
        raise NotFoundError(f"customer {customer_id!r} not found in namespace {namespace!r}")
    if live and customer.deleted_at is not None:
        raise NotFoundError(f"customer {customer_id!r} is deleted")


def _same(a: Grant, b: Grant) -> bool:
    return (a.currency, a.amount, a.priority, a.feature_keys, a.effective_at, a.expires_at) == (
        b.currency,
        b.amount,
        b.priority,
        b.feature_keys,
        b.effective_at,
        b.expires_at,
    )


def _stored(conn: Connection, namespace: str, customer_id: str, grant_id: str) -> StoredGrant:
    return next(g for g in list_grants(conn, namespace, customer_id, include_voided=True) if g.grant.id == grant_id)


def grant_credit(engine: Engine, namespace: str, request: GrantRequest, *, now: datetime | None = None) -> GrantResult:
    """Create a grant and, when it is effective and not expired now, pay the customer's open advance with it
    (docs/credits.md §3.8 backfill), in one transaction. `--id` of an identical grant: no write."""
    now = now or utcnow()
    effective_at = request.effective_at or now
    _validate(request, effective_at)
    grant = Grant(
        id=request.id or new_id("cgr"),
        currency=request.currency,
        amount=request.amount,
        effective_at=effective_at,
        created_at=now,
        priority=request.priority,
        feature_keys=frozenset(request.feature_keys) if request.feature_keys else None,
        expires_at=request.expires_at,
    )

    def work(conn: Connection, grant: Grant = grant) -> GrantResult:
        _require_live_customer(conn, namespace, request.customer_id, live=True)
        lock_customer(conn, namespace, request.customer_id)
        if request.id is not None:
            existing = get_grant(conn, namespace, request.id)
            if existing is not None:
                owner, stored = existing
                if request.effective_at is None:  # the default (now) of a retried command is not a new field
                    grant = replace(grant, effective_at=stored.effective_at)
                if owner != request.customer_id or not _same(stored, grant):
                    raise ConflictError(f"grant {request.id} exists with other fields")
                return GrantResult(_stored(conn, namespace, owner, stored.id), Decimal(0), False)
        insert_grant(conn, namespace, request.customer_id, grant)
        backfilled = Decimal(0)
        if effective_at <= now and not grant.is_expired_at(now):
            ledger, feature_keys = load_ledger(
                conn,
                namespace,
                request.customer_id,
                grant.currency,
                with_open_advance=True,
                new_id=lambda: new_id("cal"),
            )
            backfilled = ledger.backfill(ledger.grant(grant.id), now, feature_keys)
            insert_allocation_rows(conn, namespace, request.customer_id, grant.currency, ledger.new_rows, now)
        return GrantResult(_stored(conn, namespace, request.customer_id, grant.id), backfilled, True)

    result = run_transaction(engine, work)
    if result.created:
        log.info("credits.granted", namespace=namespace, grant_id=grant.id, backfilled=str(result.backfilled))
    return result


def void_credit(engine: Engine, namespace: str, grant_id: str, *, now: datetime | None = None) -> StoredGrant:
    """Void a grant (already voided: no write). NotFoundError (exit 1) when there is no such grant."""
    now = now or utcnow()

    def work(conn: Connection) -> StoredGrant:
        found = get_grant(conn, namespace, grant_id)
        if found is None:
            raise NotFoundError(f"grant {grant_id!r} not found in namespace {namespace!r}")
        customer_id, _ = found
        lock_customer(conn, namespace, customer_id)
        void_grant(conn, namespace, grant_id, now)
        return _stored(conn, namespace, customer_id, grant_id)

    return run_transaction(engine, work)


def customer_grants(engine: Engine, namespace: str, customer_id: str, *, include_voided: bool) -> list[StoredGrant]:
    def work(conn: Connection) -> list[StoredGrant]:
        _require_live_customer(conn, namespace, customer_id, live=False)
        return list_grants(conn, namespace, customer_id, include_voided=include_voided)

    return run_transaction(engine, work)


def customer_balance(engine: Engine, namespace: str, customer_id: str, *, at: datetime | None = None) -> list[Balance]:
    def work(conn: Connection) -> list[Balance]:
        _require_live_customer(conn, namespace, customer_id, live=False)
        return balances(conn, namespace, customer_id, at or utcnow())

    return run_transaction(engine, work)
