"""Credit grants and allocation rows (docs/credits.md §2.2, §3.8-§3.9): grants inserted, voided and listed with their
remaining credit; allocation rows appended (never updated or deleted); a customer's ledger loaded for the
runs a step touches; the balance. Every statement is scoped by namespace; writers hold the customer lock."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, Connection, Text, bindparam, text

from worker.domain.credit_allocation import AllocationRow, Balance, Grant, Ledger, balance
from worker.domain.money import format_decimal
from worker.domain.snapshot import LedgerData
from worker.store.db import json_dumps

# A grant with its remaining credit: amount − Σ rows with its id (docs/credits.md §3.8 "Sums"); `:currency` null: all.
_GRANTS = text(
    """
    SELECT g.id, g.currency, g.amount, g.effective_at, g.created_at, g.priority, g.feature_keys, g.expires_at,
        g.voided_at, g.amount - COALESCE(s.spent, 0) AS remaining
    FROM credit_grants g
    LEFT JOIN (
        SELECT grant_id, sum(amount) AS spent FROM credit_allocations
        WHERE namespace = :namespace AND customer_id = :customer_id AND grant_id IS NOT NULL
        GROUP BY grant_id
    ) s ON s.grant_id = g.id
    WHERE g.namespace = :namespace AND g.customer_id = :customer_id
        AND (CAST(:currency AS text) IS NULL OR g.currency = :currency)
    """
)
_GRANT_BY_ID = text(
    """
    SELECT id, currency, amount, effective_at, created_at, priority, feature_keys, expires_at, voided_at, customer_id
    FROM credit_grants WHERE namespace = :namespace AND id = :id
    """
)

_INSERT_GRANT = text(
    """
    INSERT INTO credit_grants (namespace, id, customer_id, currency, amount, priority, feature_keys, effective_at,
        expires_at, voided_at, created_at, updated_at)
    VALUES (:namespace, :id, :customer_id, :currency, :amount, :priority, CAST(:feature_keys AS jsonb),
        :effective_at, :expires_at, NULL, :created_at, :created_at)
    """
)
_VOID_GRANT = text(
    """
    UPDATE credit_grants SET voided_at = :now, updated_at = :now
    WHERE namespace = :namespace AND id = :id AND voided_at IS NULL
    """
)

# Rows of whole runs: the given runs, and (for a backfill) every run of the customer and currency with an
# advance slice still open. Each row carries its charge's feature key (backfill's feature-key rule).
_RUN_ROWS = text(
    """
    WITH open_runs AS (
        SELECT a.run_id FROM credit_allocations a
        WHERE :with_open_advance AND a.namespace = :namespace AND a.customer_id = :customer_id
            AND a.currency = :currency AND a.grant_id IS NULL
        GROUP BY a.run_id HAVING sum(a.amount) > 0
    )
    SELECT a.id, a.seq, a.charge_id, a.run_id, a.grant_id, a.kind, a.amount, a.booked_at, a.reverses_id,
        a.backfills_id, c.feature_key
    FROM credit_allocations a
    JOIN charges c ON c.namespace = a.namespace AND c.id = a.charge_id
    WHERE a.namespace = :namespace AND a.customer_id = :customer_id AND a.currency = :currency
        AND (a.run_id = ANY(:run_ids) OR a.run_id IN (SELECT run_id FROM open_runs))
    ORDER BY a.seq
    """
).bindparams(bindparam("run_ids", type_=ARRAY(Text)))

# A sync's ledgers in one statement (docs/credits.md §3.3): the customer's grants in the given currencies, each with
# its remaining credit, and the allocation rows of the given runs.
_SYNC_LEDGERS = text(
    """
    SELECT 'grant' AS row_kind, g.id, g.currency, g.amount, g.effective_at, g.created_at, g.priority,
        g.feature_keys, g.expires_at, g.voided_at, g.amount - COALESCE(s.spent, 0) AS remaining,
        NULL::bigint AS seq, NULL::text AS charge_id, NULL::text AS run_id, NULL::text AS grant_id,
        NULL::text AS kind, NULL::timestamptz AS booked_at, NULL::text AS reverses_id, NULL::text AS backfills_id
    FROM credit_grants g
    LEFT JOIN (
        SELECT grant_id, sum(amount) AS spent FROM credit_allocations
        WHERE namespace = :namespace AND customer_id = :customer_id AND grant_id IS NOT NULL
        GROUP BY grant_id
    ) s ON s.grant_id = g.id
    WHERE g.namespace = :namespace AND g.customer_id = :customer_id AND g.currency = ANY(:currencies)
    UNION ALL
    SELECT 'row', a.id, a.currency, a.amount, NULL, NULL, NULL, NULL, NULL, NULL, NULL, a.seq, a.charge_id, a.run_id,
        a.grant_id, a.kind, a.booked_at, a.reverses_id, a.backfills_id
    FROM credit_allocations a
    WHERE a.namespace = :namespace AND a.customer_id = :customer_id AND a.run_id = ANY(:run_ids)
    """
).bindparams(bindparam("currencies", type_=ARRAY(Text)), bindparam("run_ids", type_=ARRAY(Text)))

_OPEN_ADVANCE = text(
    """
    SELECT currency, sum(amount) AS open_advance FROM credit_allocations
    WHERE namespace = :namespace AND customer_id = :customer_id AND grant_id IS NULL
    GROUP BY currency
    """
)

# Rows are inserted in the ledger's order: `ORDER BY ordinality` makes the identity `seq` follow it.
_INSERT_ROWS = text(
    """
    INSERT INTO credit_allocations (namespace, id, customer_id, currency, charge_id, run_id, grant_id, kind, amount,
        reverses_id, backfills_id, booked_at, created_at)
    SELECT :namespace, v.id, :customer_id, :currency, v.charge_id, v.run_id, v.grant_id, v.kind, v.amount,
        v.reverses_id, v.backfills_id, v.booked_at, :now
    FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS (id text, charge_id text, run_id text,
        grant_id text, kind text, amount numeric, reverses_id text, backfills_id text, booked_at timestamptz))
        WITH ORDINALITY AS v(id, charge_id, run_id, grant_id, kind, amount, reverses_id, backfills_id, booked_at, n)
    ORDER BY v.n
    """
)


@dataclass(frozen=True, slots=True)
class StoredGrant:
    grant: Grant
    remaining: Decimal
    customer_id: str = ""


def _grant(row: Any) -> Grant:
    return Grant(
        id=row.id,
        currency=row.currency,
        amount=Decimal(row.amount),
        effective_at=row.effective_at,
        created_at=row.created_at,
        priority=row.priority,
        feature_keys=frozenset(row.feature_keys) if row.feature_keys is not None else None,
        expires_at=row.expires_at,
        voided_at=row.voided_at,
    )


def _allocation(row: Any) -> AllocationRow:
    return AllocationRow(
        row.id,
        row.seq,
        row.charge_id,
        row.run_id,
        row.grant_id,
        row.kind,
        Decimal(row.amount),
        row.booked_at,
        row.reverses_id,
        row.backfills_id,
    )


def insert_grant(conn: Connection, namespace: str, customer_id: str, grant: Grant) -> None:
    """One grant row; validation of docs/credits.md §2.3 (amount, decimals, dates, priority) is the caller's."""
    conn.execute(
        _INSERT_GRANT,
        {
            "namespace": namespace,
            "id": grant.id,
            "customer_id": customer_id,
            "currency": grant.currency,
            "amount": grant.amount,
            "priority": grant.priority,
            "feature_keys": json_dumps(sorted(grant.feature_keys)) if grant.feature_keys is not None else None,
            "effective_at": grant.effective_at,
            "expires_at": grant.expires_at,
            "created_at": grant.created_at,
        },
    )


def get_grant(conn: Connection, namespace: str, grant_id: str) -> tuple[str, Grant] | None:
    """(customer_id, grant), or None when there is no such grant in the namespace."""
    row = conn.execute(_GRANT_BY_ID, {"namespace": namespace, "id": grant_id}).one_or_none()
    return None if row is None else (row.customer_id, _grant(row))


def void_grant(conn: Connection, namespace: str, grant_id: str, now: datetime) -> bool:
    """Void a grant; False when it was already voided or does not exist (no write)."""
    return conn.execute(_VOID_GRANT, {"namespace": namespace, "id": grant_id, "now": now}).rowcount == 1


def list_grants(
    conn: Connection, namespace: str, customer_id: str, *, include_voided: bool = False
) -> list[StoredGrant]:
    """The customer's grants with their remaining credit, by currency then consumption order (docs/credits.md §2.4)."""
    rows = conn.execute(_GRANTS, {"namespace": namespace, "customer_id": customer_id, "currency": None})
    grants = [StoredGrant(_grant(r), Decimal(r.remaining), customer_id) for r in rows]
    if not include_voided:
        grants = [g for g in grants if g.grant.voided_at is None]
    return sorted(grants, key=lambda g: (g.grant.currency, g.grant.consumption_key()))


def load_ledger(
    conn: Connection,
    namespace: str,
    customer_id: str,
    currency: str,
    *,
    run_ids: Sequence[str] = (),
    with_open_advance: bool = False,
    new_id: Callable[[], str],
) -> tuple[Ledger, dict[str, str | None]]:
    """The customer's ledger in `currency` (two statements): every grant with its remaining credit, and the
    rows of `run_ids` — plus, `with_open_advance`, of every run with open advance (a backfill). Also returns
    the feature key of each charge those rows belong to."""
    args = {"namespace": namespace, "customer_id": customer_id, "currency": currency}
    grant_rows = conn.execute(_GRANTS, args).all()
    grants = [_grant(r) for r in grant_rows]
    remaining = {r.id: Decimal(r.remaining) for r in grant_rows}
    rows = conn.execute(_RUN_ROWS, {**args, "run_ids": list(run_ids), "with_open_advance": with_open_advance}).all()
    allocations = [_allocation(r) for r in rows]
    feature_keys = {r.charge_id: r.feature_key for r in rows}
    return Ledger(currency, grants, allocations, new_id=new_id, remaining=remaining), feature_keys


def load_sync_ledgers(
    conn: Connection, namespace: str, customer_id: str, runs_by_currency: dict[str, set[str]]
) -> dict[str, LedgerData]:
    """The customer's ledger data per currency for a sync (one statement, none without currencies): every grant
    of the currency with its remaining credit, and the rows of the given runs (docs/credits.md §3.3)."""
    if not runs_by_currency:
        return {}
    currencies = sorted(runs_by_currency)
    run_ids = sorted(set().union(*runs_by_currency.values()))
    result = conn.execute(
        _SYNC_LEDGERS,
        {"namespace": namespace, "customer_id": customer_id, "currencies": currencies, "run_ids": run_ids},
    ).all()
    grants: dict[str, list[Grant]] = {c: [] for c in currencies}
    remaining: dict[str, dict[str, Decimal]] = {c: {} for c in currencies}
    rows: dict[str, list[AllocationRow]] = {c: [] for c in currencies}
    for r in result:
        if r.row_kind == "grant":
            grants[r.currency].append(_grant(r))
            remaining[r.currency][r.id] = Decimal(r.remaining)
        elif r.currency in rows:
            rows[r.currency].append(_allocation(r))
    return {
        c: LedgerData(c, tuple(grants[c]), remaining[c], tuple(sorted(rows[c], key=lambda a: a.seq)))
        for c in currencies
    }


def insert_allocation_rows(
    conn: Connection, namespace: str, customer_id: str, currency: str, rows: Iterable[AllocationRow], now: datetime
) -> None:
    """Append the rows in order, one statement; the database assigns `seq` in that order."""
    payload = [
        {
            "id": r.id,
            "charge_id": r.charge_id,
            "run_id": r.run_id,
            "grant_id": r.grant_id,
            "kind": r.kind,
            "amount": format_decimal(r.amount),
            "reverses_id": r.reverses_id,
            "backfills_id": r.backfills_id,
            "booked_at": r.booked_at.isoformat(),
        }
        for r in rows
    ]
    if payload:
        conn.execute(
            _INSERT_ROWS,
            {
                "namespace": namespace,
                "customer_id": customer_id,
                "currency": currency,
                "now": now,
                "rows": json_dumps(payload),
            },
        )


def balances(conn: Connection, namespace: str, customer_id: str, at: datetime) -> list[Balance]:
    """docs/credits.md §3.9 per currency that has a grant or an allocation row, by currency (two statements)."""
    args = {"namespace": namespace, "customer_id": customer_id}
    grant_rows = conn.execute(_GRANTS, {**args, "currency": None}).all()
    advance = {r.currency: Decimal(r.open_advance) for r in conn.execute(_OPEN_ADVANCE, args)}
    grants = [_grant(r) for r in grant_rows]
    remaining = {r.id: Decimal(r.remaining) for r in grant_rows}
    currencies = sorted({g.currency for g in grants} | set(advance))
    return [balance(cur, grants, remaining, advance.get(cur, Decimal(0)), at) for cur in currencies]
