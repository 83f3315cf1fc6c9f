"""The floor: the same database work as a sync, with minimal hand-written SQL and no planning.

A sync must at least read the subscription's lines and groups (one SELECT), read the invoices they are
on together with the customer's gathering invoice (one SELECT), and write what changed together with the
sync state (one statement of data-modifying CTEs). The rows to write are known in advance: they are
taken from a dry run of the real sync on the floor's twin subscription, before the clock starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ARRAY, Engine, Text, bindparam, text
from sqlalchemy.dialects.postgresql import TIMESTAMP

from bench.seeding import FLOOR
from worker.domain.decide import SyncPlan, decide
from worker.domain.timeutil import trunc
from worker.infra.ids import new_id
from worker.store.snapshot import load_snapshot

_TS = ARRAY(TIMESTAMP(timezone=True))
_TXT = ARRAY(Text)

READ_LINES = text(
    """
    SELECT id, invoice_id, managed_by, unique_reference_id, split_line_group_id, annotations,
           service_period_start, service_period_end, billing_period_start, billing_period_end, invoice_at,
           price, deleted_at
    FROM invoice_lines
    WHERE namespace = :namespace AND subscription_id = :subscription_id
      AND (deleted_at IS NULL OR managed_by = 'manual' OR split_line_group_id IS NOT NULL)
    UNION ALL
    SELECT id, NULL, NULL, unique_reference_id, NULL, NULL, service_period_start, service_period_end,
           billing_period_start, billing_period_end, NULL, price, NULL
    FROM split_line_groups
    WHERE namespace = :namespace AND subscription_id = :subscription_id AND deleted_at IS NULL
    """
)

READ_INVOICES = text(
    """
    SELECT id, type, status, immutable, deleted_at FROM invoices
    WHERE namespace = :namespace
      AND (id = ANY(:ids)
           OR (customer_id = :customer_id AND currency = :currency AND type = 'gathering' AND deleted_at IS NULL))
    """
).bindparams(bindparam("ids", type_=_TXT))

_NEW_INVOICE = """
    new_invoice AS (
        INSERT INTO invoices (namespace, id, customer_id, currency, type, status, immutable, number,
                              created_at, updated_at)
        VALUES (:namespace, :invoice_id, :customer_id, :currency, 'gathering', 'gathering', false, :number, :now, :now)
    )"""

_NEW_LINES = """
    new_lines AS (
        INSERT INTO invoice_lines (namespace, id, invoice_id, currency, name, description, managed_by,
            unique_reference_id, subscription_id, subscription_phase_id, subscription_item_id,
            billing_period_start, billing_period_end, service_period_start, service_period_end, invoice_at,
            price, feature_key, discounts, tax_config, annotations, created_at, updated_at)
        SELECT :namespace, v.id, :invoice_id, :currency, v.name, v.description, 'subscription',
            v.ref, :subscription_id, v.phase_id, v.item_id, v.bp_start, v.bp_end, v.sp_start, v.sp_end,
            v.invoice_at, v.price::jsonb, v.feature_key, v.discounts::jsonb, v.tax_config::jsonb, '{}'::jsonb,
            :now, :now
        FROM unnest(:n_ids, :n_names, :n_descriptions, :n_refs, :n_phase_ids, :n_item_ids, :n_bp_starts,
                    :n_bp_ends, :n_sp_starts, :n_sp_ends, :n_invoice_ats, :n_prices, :n_feature_keys,
                    :n_discounts, :n_tax_configs)
            AS v(id, name, description, ref, phase_id, item_id, bp_start, bp_end, sp_start, sp_end, invoice_at,
                 price, feature_key, discounts, tax_config)
    )"""

_UPDATED_LINES = """
    updated_lines AS (
        UPDATE invoice_lines AS l SET service_period_start = v.sp_start, service_period_end = v.sp_end,
            invoice_at = v.invoice_at, price = COALESCE(v.price::jsonb, l.price), updated_at = :now
        FROM unnest(:u_ids, :u_sp_starts, :u_sp_ends, :u_invoice_ats, :u_prices)
            AS v(id, sp_start, sp_end, invoice_at, price)
        WHERE l.namespace = :namespace AND l.id = v.id
    )"""

_DELETED_LINES = """
    deleted_lines AS (
        UPDATE invoice_lines SET deleted_at = :now, updated_at = :now
        WHERE namespace = :namespace AND id = ANY(:d_ids)
    )"""

_SYNC_STATE = """
    INSERT INTO subscription_sync_states (namespace, subscription_id, has_billables, next_sync_after, synced_at)
    VALUES (:namespace, :subscription_id, :has_billables, :next_sync_after, :now)
    ON CONFLICT (namespace, subscription_id) DO UPDATE SET has_billables = excluded.has_billables,
        next_sync_after = excluded.next_sync_after, synced_at = excluded.synced_at
"""

_ARRAY_TYPES = {
    "n_bp_starts": _TS,
    "n_bp_ends": _TS,
    "n_sp_starts": _TS,
    "n_sp_ends": _TS,
    "n_invoice_ats": _TS,
    "u_sp_starts": _TS,
    "u_sp_ends": _TS,
    "u_invoice_ats": _TS,
}


def decided(engine: Engine, namespace: str, subscription_id: str, as_of: datetime) -> SyncPlan:
    """What the real sync of `subscription_id` would write now: load (in a transaction of its own, nothing
    written), then `decide` directly (docs/sync.md §8.1 "Anatomy of a sync")."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        snapshot = load_snapshot(conn, namespace, subscription_id, now=now)
    return decide(snapshot, as_of=as_of, now=now, ids=new_id)


@dataclass(frozen=True, slots=True)
class FloorWork:
    """Everything the floor needs for one subscription, computed before timing."""

    subscription_id: str
    customer_id: str
    currency: str
    write: Any  # the one write statement (a TextClause)
    params: dict[str, Any]
    planned_rows: int
    sql: str = ""  # the write's SQL text: `statement(sql, params)` rebuilds `write` (the queue floor's processes)


def prepare(engine: Engine, subscription_id: str, as_of: datetime) -> FloorWork:
    """Decide the real sync on the floor's twin (load → decide, nothing written) and turn its plan into the
    floor's one write."""
    plan = decided(engine, FLOOR, subscription_id, as_of)
    changes = plan.lines
    if changes.issues or changes.group_deletes or changes.group_updates:
        raise NotImplementedError("the floor covers plain lines only (the benchmark makes no groups or issues)")
    with engine.connect() as conn:
        currency = conn.execute(
            text("SELECT currency FROM subscriptions WHERE namespace = :ns AND id = :id"),
            {"ns": FLOOR, "id": subscription_id},
        ).scalar_one()
    params: dict[str, Any] = {
        "namespace": FLOOR,
        "subscription_id": subscription_id,
        "customer_id": plan.customer_id,
        "currency": currency,
        "has_billables": plan.state.has_billables,
        "next_sync_after": plan.state.next_sync_after,
    }
    ctes = []
    new_lines = changes.new_lines
    if new_lines:
        invoice_id = new_lines[0].invoice_id
        if plan.gathering_invoice is not None:  # the first sync of this customer: the gathering invoice is created too
            invoice_id = plan.gathering_invoice.id
            ctes.append(_NEW_INVOICE)
            params["number"] = f"GATHER-{currency}-{invoice_id[-8:]}"
        params["invoice_id"] = invoice_id
        targets = [n.target for n in new_lines]
        params.update(
            n_ids=[n.id for n in new_lines],
            n_names=[t.name for t in targets],
            n_descriptions=[t.description for t in targets],
            n_refs=[t.identity for t in targets],
            n_phase_ids=[t.phase_id for t in targets],
            n_item_ids=[t.item_id for t in targets],
            n_bp_starts=[trunc(t.billing_period.start) for t in targets],
            n_bp_ends=[trunc(t.billing_period.end) for t in targets],
            n_sp_starts=[trunc(t.service_period.start) for t in targets],
            n_sp_ends=[trunc(t.service_period.end) for t in targets],
            n_invoice_ats=[trunc(t.invoice_at) for t in targets],
            n_prices=[json.dumps(t.price.to_json()) for t in targets],
            n_feature_keys=[t.feature_key for t in targets],
            n_discounts=[json.dumps(dict(t.discounts)) if t.discounts is not None else None for t in targets],
            n_tax_configs=[json.dumps(t.tax_config) if t.tax_config is not None else None for t in targets],
        )
        ctes.append(_NEW_LINES)
    if changes.line_writes:
        writes = changes.line_writes
        params.update(
            u_ids=[w.line_id for w in writes],
            u_sp_starts=[trunc(w.service_period.start) for w in writes],
            u_sp_ends=[trunc(w.service_period.end) for w in writes],
            u_invoice_ats=[trunc(w.invoice_at) for w in writes],
            u_prices=[json.dumps(w.price.to_json()) if w.price is not None else None for w in writes],
        )
        ctes.append(_UPDATED_LINES)
    if changes.line_deletes:
        params["d_ids"] = list(changes.line_deletes)
        ctes.append(_DELETED_LINES)
    sql = ("WITH" + ",".join(ctes) if ctes else "") + _SYNC_STATE
    rows = len(new_lines) + len(changes.line_writes) + len(changes.line_deletes) + 1
    return FloorWork(subscription_id, plan.customer_id, currency, statement(sql, params), params, rows, sql)


def statement(sql: str, params: dict[str, Any]) -> Any:
    """The floor's write statement: `sql` with its array parameters typed."""
    arrays = [bindparam(k, type_=_ARRAY_TYPES.get(k, _TXT)) for k in params if k[:2] in ("n_", "u_", "d_")]
    return text(sql).bindparams(*arrays)


def run(engine: Engine, work: FloorWork) -> None:
    """The floor's transaction: two reads (rows fetched and decoded, like the sync does) and one write."""
    params = work.params
    with engine.begin() as conn:
        lines = conn.execute(READ_LINES, {"namespace": FLOOR, "subscription_id": work.subscription_id}).all()
        conn.execute(
            READ_INVOICES,
            {
                "namespace": FLOOR,
                "ids": sorted({row.invoice_id for row in lines if row.invoice_id is not None}),
                "customer_id": work.customer_id,
                "currency": work.currency,
            },
        ).all()
        conn.execute(work.write, {**params, "now": datetime.now(UTC)})
