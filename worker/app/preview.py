"""`subsync preview` and `subscriptions apply --dry-run` (docs/sync.md §10.2): what the syncs, charge
advances (and, when asked, the after-sync invoicing) of a subscription would create or change, computed by the
code that really bills (`worker.app.simulate`) in a transaction that is rolled back.

The timeline: a sync at `from` (default now), then a sync at each time the subscription falls due
(`next_sync_after`, docs/sync.md §7, §8.4; at least one second after the previous sync) and a charge advance
at each time one of the customer's charges falls due (`advance_after`, docs/credits.md §2.5), up to `to`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, and_, select

from worker.app.simulate import advance_at, invoice_at, next_charge_due, rolled_back, sync_at
from worker.app.sync import SyncResult
from worker.config import DEFAULT_MAX_TARGET_LINES
from worker.contract.documents import SubscriptionDocument
from worker.contract.text import format_decimal, format_optional_time, format_time
from worker.errors import InvalidInputError
from worker.infra.clock import utcnow
from worker.store.credits import balances
from worker.store.subscriptions import apply_subscription
from worker.store.tables import charge_runs, charges, credit_allocations, invoice_lines, invoices, split_line_groups
from worker.store.view import load_subscription

#: A preview stops after this many steps (a sync or an advance each): a runaway timeline fails clearly.
MAX_STEPS = 5000
_SECOND = timedelta(seconds=1)


def _num(v: Any) -> str | None:
    return None if v is None else format_decimal(Decimal(v))


def _period(start: datetime | None, end: datetime | None) -> dict[str, str | None]:
    return {"from": format_optional_time(start), "to": format_optional_time(end)}


def line_snapshot(conn: Connection, namespace: str, subscription_id: str) -> dict[str, dict[str, Any]]:
    """The subscription's live lines by id, in the preview's line shape (docs/sync.md §10.2)."""
    l, i, g = invoice_lines, invoices, split_line_groups  # noqa: E741
    rows = conn.execute(
        select(l, i.c.type.label("invoice_type"), g.c.unique_reference_id.label("group_reference"))
        .select_from(
            l.join(i, and_(i.c.namespace == l.c.namespace, i.c.id == l.c.invoice_id)).outerjoin(
                g, and_(g.c.namespace == l.c.namespace, g.c.id == l.c.split_line_group_id)
            )
        )
        .where(l.c.namespace == namespace, l.c.subscription_id == subscription_id, l.c.deleted_at.is_(None))
    )
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        price = r.price or {}
        out[r.id] = {
            "id": r.id,
            "unique_reference_id": r.unique_reference_id or r.group_reference,
            "currency": r.currency,
            "service_period": _period(r.service_period_start, r.service_period_end),
            "billing_period": _period(r.billing_period_start, r.billing_period_end),
            "invoice_at": format_time(r.invoice_at),
            "price_type": price.get("type"),
            "payment_term": price.get("payment_term"),
            "amount": _num(price.get("amount")) if price.get("type") == "flat" else _num(r.amount),
            "charge_id": r.charge_id,
            "invoice_type": r.invoice_type,
        }
    return out


def charge_snapshot(conn: Connection, namespace: str, subscription_id: str) -> dict[str, dict[str, Any]]:
    """The subscription's live charges by id, each with the allocation rows of its runs (docs/credits.md §3.8)."""
    c, r, a = charges.c, charge_runs.c, credit_allocations.c
    rows = conn.execute(
        select(charges).where(c.namespace == namespace, c.subscription_id == subscription_id, c.deleted_at.is_(None))
    ).all()
    allocations: dict[str, list[dict[str, Any]]] = {}
    if rows:
        for row in conn.execute(
            select(a.charge_id, a.grant_id, a.kind, a.amount, a.booked_at)
            .select_from(credit_allocations.join(charge_runs, and_(r.namespace == a.namespace, r.id == a.run_id)))
            .where(a.namespace == namespace, a.charge_id.in_([x.id for x in rows]), r.deleted_at.is_(None))
            .order_by(a.seq)
        ):
            allocations.setdefault(row.charge_id, []).append(
                {
                    "grant_id": row.grant_id,
                    "kind": row.kind,
                    "amount": _num(row.amount),
                    "booked_at": format_time(row.booked_at),
                }
            )
    return {
        x.id: {
            "id": x.id,
            "unique_reference_id": x.unique_reference_id,
            "currency": x.currency,
            "settlement_mode": x.settlement_mode,
            "status": x.status,
            "type": x.type,
            "service_period": _period(x.service_period_start, x.service_period_end),
            "invoice_at": format_time(x.invoice_at),
            "amount": _num(x.amount_after_proration) if x.type == "flat_fee" else _num(x.rated_amount),
            "payment_term": (x.price or {}).get("payment_term"),
            "allocations": allocations.get(x.id, []),
        }
        for x in rows
    }


def changes(before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What differs between two snapshots: created and changed rows (as they end), deleted ones (as they were)."""
    out = [
        {"change": "created" if key not in before else "changed", **row}
        for key, row in after.items()
        if before.get(key) != row
    ]
    out += [{"change": "deleted", **row} for key, row in before.items() if key not in after]
    return sorted(out, key=lambda x: (x["invoice_at"], x["unique_reference_id"] or "", x["id"]))


def months(lines: list[dict[str, Any]], charge_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Created and changed lines and charges grouped by `invoice_at` month and currency, with amount totals."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, rows in (("lines", lines), ("charges", charge_rows)):
        for row in rows:
            if row["change"] == "deleted":
                continue
            key = (row["invoice_at"][:7], row["currency"])
            group = groups.setdefault(key, {"month": key[0], "currency": key[1], "lines": 0, "charges": 0, "total": 0})
            group[kind] += 1
            if row["amount"] is not None:
                group["total"] += Decimal(row["amount"])
    return [{**g, "total": format_decimal(Decimal(g["total"]))} for _, g in sorted(groups.items())]


@dataclass(frozen=True, slots=True)
class _Run:
    namespace: str
    subscription_id: str
    start: datetime
    end: datetime
    invoice: bool
    max_target_lines: int


def _simulate(conn: Connection, run: _Run) -> dict[str, Any]:
    loaded = load_subscription(conn, run.namespace, run.subscription_id)
    customer = loaded.record.customer_id
    lines_before = line_snapshot(conn, run.namespace, run.subscription_id)
    charges_before = charge_snapshot(conn, run.namespace, run.subscription_id)
    steps: list[dict[str, Any]] = []
    booked: list[dict[str, Any]] = []
    t: datetime | None = run.start
    sync_due: datetime | None = run.start
    while t is not None and t <= run.end:
        if len(steps) >= MAX_STEPS:
            raise InvalidInputError(f"--to: the timeline has more than {MAX_STEPS} steps; preview a shorter one")
        if sync_due is not None and sync_due <= t:
            result = sync_at(conn, run.namespace, run.subscription_id, t, max_target_lines=run.max_target_lines)
            steps.append({"at": format_time(t), "kind": "sync", "patches": result.counts()})
            sync_due = _next_sync(result, t)
            if (
                run.invoice
                and not result.subscription_deleted
                and (created := invoice_at(conn, run.namespace, customer, t))
            ):
                steps.append({"at": format_time(t), "kind": "invoice", "invoices": created})
        advanced = advance_at(conn, run.namespace, customer, t)
        if advanced:
            steps.append({"at": format_time(t), "kind": "advance", "charges": len(advanced)})
            booked += [{"at": format_time(t), **_balance_json(b)} for b in balances(conn, run.namespace, customer, t)]
        upcoming = [x for x in (sync_due, next_charge_due(conn, run.namespace, customer, t)) if x is not None]
        t = min(upcoming) if upcoming else None
    line_changes = changes(lines_before, line_snapshot(conn, run.namespace, run.subscription_id))
    charge_changes = changes(charges_before, charge_snapshot(conn, run.namespace, run.subscription_id))
    return {
        "namespace": run.namespace,
        "subscription_id": run.subscription_id,
        "customer_id": customer,
        "settlement_mode": loaded.settlement_mode,
        "from": format_time(run.start),
        "to": format_time(run.end),
        "steps": steps,
        "lines": line_changes,
        "charges": charge_changes,
        "months": months(line_changes, charge_changes),
        "balances": booked,
    }


def _next_sync(result: SyncResult, t: datetime) -> datetime | None:
    """docs/sync.md §8.4: due again at `next_sync_after`; never when it has nothing to bill. A horizon equal to `t`
    (docs/sync.md §3.2 rule 3) is passed by the next reconciler run: one second later. A horizon before `t` means
    the subscription has ended (the billing period at `t` ended with it): every later sync targets the same lines,
    so the timeline needs none (and the reconciler stops a day after the end, docs/sync.md §8.4)."""
    state = result.state
    if result.subscription_deleted or not state.has_billables or state.next_sync_after is None:
        return None
    if state.next_sync_after < t:
        return None
    return max(state.next_sync_after, t + _SECOND)


def _balance_json(b: Any) -> dict[str, Any]:
    return {
        "currency": b.currency,
        "available": format_decimal(b.available),
        "open_advance": format_decimal(b.open_advance),
        "balance": format_decimal(b.balance),
    }


def _begin(start: datetime | None, to: datetime) -> datetime:
    """Where a preview starts (default now); `--to` before it is bad input."""
    begin = start or utcnow()
    if to < begin:
        raise InvalidInputError(f"--to {format_time(to)} is before --from {format_time(begin)}")
    return begin


def preview_subscription(
    engine: Engine,
    namespace: str,
    subscription_id: str,
    *,
    to: datetime,
    start: datetime | None = None,
    invoice: bool = False,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
) -> dict[str, Any]:
    """The preview of a stored subscription from `start` (default now) to `to`; writes nothing."""
    begin = _begin(start, to)
    run = _Run(namespace, subscription_id, begin, to, invoice, max_target_lines)
    return rolled_back(engine, lambda conn: _simulate(conn, run))


def preview_document(
    engine: Engine,
    document: SubscriptionDocument,
    *,
    to: datetime,
    start: datetime | None = None,
    invoice: bool = False,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
) -> dict[str, Any]:
    """The preview of a document not yet applied, against its customer's real invoices and grants."""
    begin = _begin(start, to)

    def work(conn: Connection) -> dict[str, Any]:
        stored = apply_subscription(conn, document)
        assert stored.document.id is not None  # filled in by apply
        run = _Run(document.namespace, stored.document.id, begin, to, invoice, max_target_lines)
        return _simulate(conn, run)

    return rolled_back(engine, work)


def dry_run_apply(
    engine: Engine,
    document: SubscriptionDocument,
    *,
    now: datetime | None = None,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
) -> tuple[Any, SyncResult]:
    """`subscriptions apply --dry-run`: apply the document, then the dry-run sync the worker's
    `subscription.updated` would run (docs/sync.md §10), in a transaction that is rolled back."""
    at = now or utcnow()

    def work(conn: Connection) -> tuple[Any, SyncResult]:
        stored = apply_subscription(conn, document)
        assert stored.document.id is not None
        return stored, sync_at(
            conn, document.namespace, stored.document.id, at, dry_run=True, max_target_lines=max_target_lines
        )

    return rolled_back(engine, work)
