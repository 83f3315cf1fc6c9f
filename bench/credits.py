"""The credits scenario (issue 15): a `credit_only` subscription, whose sync writes charges instead of lines
(docs/credits.md §1), measured like the lines scenarios — first, steady-state and after-edit syncs next to a floor —
at two sizes, to show the statements per sync do not grow with the number of charges (docs/credits.md §3.3).

The subscription: one phase of M months with three monthly items (a flat in-advance fee, a flat in-arrears
fee and a unit-priced usage item), so about 3 x (M + 1) charges. The edit changes the in-advance fee of the
current month mid-period (a `charge_shrink`, two `charge_create`s and the later period's `charge_delete`),
changed back on the next pass. Only the sync is measured: booking is the `advance_charges` actor's work,
outside the sync (docs/credits.md §5 item 5), so the charges stay unbooked and no ledger is read.

The floor does the least SQL such a sync needs: one SELECT of the subscription's live charges with their
live runs, and one statement of data-modifying CTEs that inserts the new charges, updates the changed ones
and upserts the sync state. Its rows come from a dry run of the real sync on the `floor` twin, before the
clock starts (as in `bench.floor`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from bench.database import CountingEngine
from bench.floor import decided
from bench.measure import Comparison, analyze, forget_decisions
from bench.seeding import FLOOR, KINDS, NAMESPACES, REAL, Seeded, _add_months, _apply, _document, _rate_card, _version
from worker.app.sync import sync_subscription
from worker.domain.charges import Charge
from worker.domain.timeutil import trunc

CREDIT_START = datetime(2023, 1, 1, tzinfo=UTC)
CREDIT_ITEMS = 3  # the first three KINDS: flat in advance, flat in arrears, usage
EDITED_ITEM = 0


@dataclass(slots=True)
class CreditSize:
    """The three scenarios at one size (M months of history)."""

    months: int
    first: Comparison = field(default_factory=lambda: Comparison("first sync"))
    steady: Comparison = field(default_factory=lambda: Comparison("steady state"))
    edit: Comparison = field(default_factory=lambda: Comparison("after an edit"))
    reused: Comparison = field(default_factory=lambda: Comparison("steady state, reused"))  # docs/sync.md §8.6

    @property
    def scenarios(self) -> list[Comparison]:
        return [self.first, self.steady, self.edit]


def as_of(months: int) -> datetime:
    """Mid-month (the 15th, 12:00) of the last month of history."""
    return _add_months(CREDIT_START, months - 1) + timedelta(days=14, hours=12)


def credit_document(namespace: str, sub_id: str, customer_id: str, months: int, *, edited: bool) -> dict[str, Any]:
    """The credit_only subscription; `edited` splits the in-advance fee on the 10th of the current month."""
    edit_at = as_of(months).replace(day=10, hour=0)
    items: dict[str, list[dict[str, Any]]] = {}
    for i in range(CREDIT_ITEMS):
        name, price, cadence = KINDS[i]
        key = f"{name}-{i}"
        card = _rate_card(key, price, cadence)
        if edited and i == EDITED_ITEM:
            raised = _rate_card(key, {**price, "amount": "45"}, cadence)
            items[key] = [_version(CREDIT_START, edit_at, card), _version(edit_at, None, raised)]
        else:
            items[key] = [_version(CREDIT_START, None, card)]
    phases = [{"key": "default", "active_from": CREDIT_START.strftime("%Y-%m-%dT%H:%M:%SZ"), "items": items}]
    document = _document(namespace, sub_id, customer_id, "P1M", CREDIT_START, phases)
    return {**document, "settlement_mode": "credit_only"}


def seed_ids(months: int, count: int, prefix: str = "credit") -> list[Seeded]:
    return [Seeded(f"{prefix}_{months}_{n}", f"cust_{prefix}_{months}_{n}", as_of(months)) for n in range(count)]


#: Months of history of the background credit tenants (~55 charges each): between the measured sizes.
BACKGROUND_MONTHS = 18


def seed_background(engine: Engine, count: int) -> list[Seeded]:
    """The credit_only tenants of a live database, synced once and never measured: `count` subscriptions of
    `BACKGROUND_MONTHS` months, in both namespaces (docs/performance.md "Credit tenants in the lived-in benchmark").
    Without them the charge tables are empty when `bench.measure.analyze` runs, and the credit syncs' generic
    plans, made from those statistics, scan every charge of the namespace while the first-sync pass fills them."""
    seeded = seed_ids(BACKGROUND_MONTHS, count, prefix="bg_credit")
    edit(engine, seeded, BACKGROUND_MONTHS, edited=False)
    for s in seeded:
        for ns in NAMESPACES:
            sync_subscription(engine, ns, s.subscription_id, as_of=s.as_of)
    return seeded


def seed(engine: Engine, months: int, count: int) -> list[Seeded]:
    """`count` credit_only subscriptions of `months` months, in both namespaces."""
    seeded = seed_ids(months, count)
    edit(engine, seeded, months, edited=False)
    return seeded


def edit(engine: Engine, seeded: Sequence[Seeded], months: int, *, edited: bool) -> None:
    docs = [
        credit_document(ns, s.subscription_id, s.customer_id, months, edited=edited)
        for s in seeded
        for ns in NAMESPACES
    ]
    _apply(engine, docs)


# --- the floor ------------------------------------------------------------------------------------------

READ_CHARGES = text(
    """
    SELECT c.id, c.unique_reference_id, c.type, c.status, c.price, c.service_period_start, c.service_period_end,
           c.full_service_period_start, c.full_service_period_end, c.billing_period_start, c.billing_period_end,
           c.invoice_at, c.amount_after_proration, c.quantity, c.advance_after,
           r.id AS run_id, r.amount, r.credits_total, r.invoice_id
    FROM charges AS c
    LEFT JOIN charge_runs AS r ON r.namespace = c.namespace AND r.charge_id = c.id AND r.deleted_at IS NULL
    WHERE c.namespace = :namespace AND c.subscription_id = :subscription_id AND c.deleted_at IS NULL
    """
)

_NEW_CHARGES = """
    new_charges AS (
        INSERT INTO charges SELECT * FROM jsonb_populate_recordset(NULL::charges, CAST(:new_rows AS jsonb))
    )"""

_UPDATED_CHARGES = """
    updated_charges AS (
        UPDATE charges AS c SET (status, service_period_end, full_service_period_end, billing_period_end,
                                 invoice_at, amount_after_proration, quantity, rated_amount, advance_after,
                                 deleted_at, updated_at)
            = (v.status, v.service_period_end, v.full_service_period_end, v.billing_period_end, v.invoice_at,
               v.amount_after_proration, v.quantity, v.rated_amount, v.advance_after, v.deleted_at, v.updated_at)
        FROM jsonb_populate_recordset(NULL::charges, CAST(:updated_rows AS jsonb)) AS v
        WHERE c.namespace = v.namespace AND c.id = v.id
    )"""

_SYNC_STATE = """
    INSERT INTO subscription_sync_states (namespace, subscription_id, has_billables, next_sync_after, synced_at)
    VALUES (:namespace, :subscription_id, :has_billables, :next_sync_after, :now)
    ON CONFLICT (namespace, subscription_id) DO UPDATE SET has_billables = excluded.has_billables,
        next_sync_after = excluded.next_sync_after, synced_at = excluded.synced_at
"""


@dataclass(frozen=True, slots=True)
class CreditFloorWork:
    subscription_id: str
    statement: Any  # a TextClause
    params: dict[str, Any]


def _ts(t: datetime | None) -> str | None:
    return None if t is None else trunc(t).isoformat()


def _num(value: Any) -> str | None:
    return None if value is None else str(value)


def _row(c: Charge, now: str) -> dict[str, Any]:
    """A `charges` row with its column names (the floor's rows are known before the clock starts)."""
    return {
        "namespace": FLOOR,
        "id": c.id,
        "customer_id": c.customer_id,
        "subscription_id": c.subscription_id,
        "subscription_phase_id": c.phase_id,
        "subscription_item_id": c.item_id,
        "unique_reference_id": c.identity,
        "type": c.type,
        "settlement_mode": c.settlement_mode,
        "status": c.status,
        "currency": c.currency,
        "name": c.name,
        "description": c.description,
        "feature_key": c.feature_key,
        "price": c.price.to_json(),
        "discounts": dict(c.discounts) if c.discounts is not None else None,
        "tax_config": c.tax_config,
        "annotations": dict(c.annotations),
        "pro_rating_enabled": c.pro_rating_enabled,
        "pro_rating_mode": c.pro_rating_mode,
        "service_period_start": _ts(c.service_period.start),
        "service_period_end": _ts(c.service_period.end),
        "full_service_period_start": _ts(c.full_service_period.start),
        "full_service_period_end": _ts(c.full_service_period.end),
        "billing_period_start": _ts(c.billing_period.start),
        "billing_period_end": _ts(c.billing_period.end),
        "invoice_at": _ts(c.invoice_at),
        "amount_before_proration": _num(c.amount_before_proration),
        "amount_after_proration": _num(c.amount_after_proration),
        "quantity": _num(c.quantity),
        "rated_amount": _num(c.rated_amount),
        "advance_after": _ts(c.advance_after),
        "created_at": now,
        "updated_at": now,
        "deleted_at": _ts(c.deleted_at),
    }


def prepare(engine: Engine, seeded: Seeded) -> CreditFloorWork:
    """Decide the real sync on the floor's twin (load → decide, nothing written); turn its charge rows into the
    floor's one write."""
    plan = decided(engine, FLOOR, seeded.subscription_id, seeded.as_of)
    changes = plan.charges
    if changes.new_runs or changes.run_writes or changes.new_lines or changes.line_writes or changes.issues:
        raise NotImplementedError("the credits floor covers unbooked credit_only charges only")
    if plan.lines.patches:
        raise NotImplementedError("the credits floor writes no lines (a credit_only subscription has none)")
    params: dict[str, Any] = {
        "namespace": FLOOR,
        "subscription_id": seeded.subscription_id,
        "has_billables": plan.state.has_billables,
        "next_sync_after": plan.state.next_sync_after,
    }
    ctes = []
    stamp = datetime.now(UTC).isoformat()  # the rows' created_at / updated_at: known before the clock starts
    if changes.new_charges:
        params["new_rows"] = json.dumps([_row(c, stamp) for c in changes.new_charges.values()])
        ctes.append(_NEW_CHARGES)
    if changes.charge_writes:
        params["updated_rows"] = json.dumps([_row(c, stamp) for c in changes.charge_writes.values()])
        ctes.append(_UPDATED_CHARGES)
    sql = ("WITH" + ",".join(ctes) if ctes else "") + _SYNC_STATE
    return CreditFloorWork(seeded.subscription_id, text(sql), params)


def run_floor(engine: Engine, work: CreditFloorWork) -> None:
    """The floor's transaction: one read (rows fetched and decoded) and one write."""
    with engine.begin() as conn:
        conn.execute(READ_CHARGES, {"namespace": FLOOR, "subscription_id": work.subscription_id}).all()
        conn.execute(work.statement, {**work.params, "now": datetime.now(UTC)})


# --- the passes -----------------------------------------------------------------------------------------


def live_charges(engine: Engine, subscription_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM charges WHERE namespace = :ns AND subscription_id = :id"
                    " AND deleted_at IS NULL"
                ),
                {"ns": REAL, "id": subscription_id},
            ).scalar_one()
        )


def run_pass(engine: Engine, counting: CountingEngine, subscriptions: Sequence[Seeded], into: Comparison) -> None:
    """As `bench.measure.run_pass`, for charges: the first subscription is counted, the others timed."""
    works = [prepare(engine, s) for s in subscriptions]
    for n, (s, work) in enumerate(zip(subscriptions, works, strict=True)):

        def real(e: Engine, s: Seeded = s) -> object:
            return sync_subscription(e, REAL, s.subscription_id, as_of=s.as_of)

        if n == 0:
            into.real.counts = counting.measure(real)
            into.floor.counts = counting.measure(lambda e, w=work: run_floor(e, w))  # type: ignore[misc]
            continue
        began, cpu = time.perf_counter(), time.process_time()
        real(engine)
        synced, synced_cpu = time.perf_counter(), time.process_time()
        run_floor(engine, work)
        into.real.seconds.append(synced - began)
        into.floor.seconds.append(time.perf_counter() - synced)
        into.real.cpu.append(synced_cpu - cpu)  # the sync's Python work, robust on a busy machine (issue 23)
        into.floor.cpu.append(time.process_time() - synced_cpu)
    into.lines = live_charges(engine, subscriptions[-1].subscription_id)


def measure(
    engine: Engine, counting: CountingEngine, months: Sequence[int], count: int, repeats: int, *, analyzed: bool = True
) -> list[CreditSize]:
    """Seed `count` subscriptions per size, then the first, steady-state and after-edit passes (the statistics
    brought up to date after seeding and after the first pass: `bench.measure.analyze`)."""
    sizes = []
    for m in months:
        seeded = seed(engine, m, count)
        analyze(engine, enabled=analyzed)
        size = CreditSize(m)
        run_pass(engine, counting, seeded, size.first)
        analyze(engine, enabled=analyzed)
        for _ in range(repeats):
            forget_decisions(engine)  # decided in full, each sync recording its decision (docs/sync.md §8.6)
            run_pass(engine, counting, seeded, size.steady)
        for _ in range(repeats):
            run_pass(engine, counting, seeded, size.reused)
        for n in range(repeats):
            edit(engine, seeded, m, edited=n % 2 == 0)
            run_pass(engine, counting, seeded, size.edit)
        sizes.append(size)
    return sizes
