"""Seeding the benchmark's subscriptions through the real write path (validated documents).

Every subscription is seeded twice, in two namespaces with the same ids: `bench` is synced by the
real code, `floor` by the hand-written floor (`bench.floor`), so both always see the same state.

The default subscription ("mixed"): P phases, each lasting M months, each with I items whose
price kinds cycle through a realistic mix — flat in advance, flat in arrears, unit-priced usage,
one-time (flat, in advance). `as_of` lies in the middle of the last month of the last phase,
which stays open. The scaling subscription: daily cadence, ten recurring items, D days of history.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from worker.contract.builders import item_version, rate_card
from worker.contract.documents import validate_document
from worker.store.customers import upsert_customer
from worker.store.subscriptions import apply_subscription

REAL = "bench"
FLOOR = "floor"
NAMESPACES = (REAL, FLOOR)

MIXED_START = datetime(2023, 1, 1, tzinfo=UTC)
SCALE_START = datetime(2020, 1, 1, tzinfo=UTC)
SCALE_ITEMS = 10

# (price, cadence) of each kind; the one-time item has no cadence.
KINDS: tuple[tuple[str, dict[str, Any], str | None], ...] = (
    ("seats", {"type": "flat", "amount": "30", "payment_term": "in_advance"}, "P1M"),
    ("support", {"type": "flat", "amount": "12.50", "payment_term": "in_arrears"}, "P1M"),
    ("api-calls", {"type": "unit", "amount": "0.002"}, "P1M"),
    ("setup", {"type": "flat", "amount": "99", "payment_term": "in_advance"}, None),
)
EDITED_KIND = 0  # the edit scenario changes the in-advance flat fee of the last phase mid-period


@dataclass(frozen=True, slots=True)
class Shape:
    """The default subscription: P phases × I items × M months of history per phase."""

    phases: int
    items: int
    months: int

    @property
    def as_of(self) -> datetime:
        """Mid-month (the 15th, 12:00) of the last month of the last phase."""
        last_month = _add_months(MIXED_START, self.phases * self.months - 1)
        return last_month + timedelta(days=14, hours=12)

    @property
    def edit_at(self) -> datetime:
        """Mid-period change of the edited item: the 10th of the current month."""
        return self.as_of.replace(day=10, hour=0)


@dataclass(frozen=True, slots=True)
class Seeded:
    """One subscription, present in both namespaces under the same ids."""

    subscription_id: str
    customer_id: str
    as_of: datetime


def _add_months(t: datetime, months: int) -> datetime:
    total = t.year * 12 + t.month - 1 + months
    year, month = divmod(total, 12)
    day = min(t.day, calendar.monthrange(year, month + 1)[1])
    return t.replace(year=year, month=month + 1, day=day)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rate_card(key: str, price: dict[str, Any], cadence: str | None) -> dict[str, Any]:
    feature_key = key if price["type"] != "flat" else None
    return rate_card(key.replace("-", " ").title(), price, cadence=cadence, feature_key=feature_key)


def _version(start: datetime, end: datetime | None, card: dict[str, Any]) -> dict[str, Any]:
    return item_version(_iso(start), _iso(end) if end else None, card)


def mixed_document(namespace: str, sub_id: str, customer_id: str, shape: Shape, *, edited: bool) -> dict[str, Any]:
    """The default subscription; `edited` splits one item of the last phase mid-period at a new price."""
    phases = []
    for p in range(shape.phases):
        start = _add_months(MIXED_START, p * shape.months)
        items: dict[str, list[dict[str, Any]]] = {}
        for i in range(shape.items):
            name, price, cadence = KINDS[i % len(KINDS)]
            key = f"{name}-{i}"
            card = _rate_card(key, price, cadence)
            if edited and p == shape.phases - 1 and i == EDITED_KIND:
                raised = _rate_card(key, {**price, "amount": "45"}, cadence)
                items[key] = [_version(start, shape.edit_at, card), _version(shape.edit_at, None, raised)]
            else:
                items[key] = [_version(start, None, card)]
        phases.append({"key": f"phase-{p}", "active_from": _iso(start), "items": items})
    return _document(namespace, sub_id, customer_id, "P1M", MIXED_START, phases)


def scale_as_of(days: int) -> datetime:
    return SCALE_START + timedelta(days=days - 1, hours=12)


def scale_document(namespace: str, sub_id: str, customer_id: str) -> dict[str, Any]:
    """Ten recurring daily items (flat in advance, flat in arrears, usage): ~10 lines per day of history."""
    items = {}
    for i in range(SCALE_ITEMS):
        name, price, _ = KINDS[i % 3]
        key = f"{name}-{i}"
        items[key] = [_version(SCALE_START, None, _rate_card(key, price, "P1D"))]
    phases = [{"key": "default", "active_from": _iso(SCALE_START), "items": items}]
    return _document(namespace, sub_id, customer_id, "P1D", SCALE_START, phases)


def _document(
    namespace: str, sub_id: str, customer_id: str, cadence: str, start: datetime, phases: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "id": sub_id,
        "customer_id": customer_id,
        "name": f"Bench {sub_id}",
        "currency": "USD",
        "billing_cadence": cadence,
        "billing_anchor": _iso(start),
        "pro_rating": {"enabled": True, "mode": "prorate_prices"},
        "active_from": _iso(start),
        "active_to": None,
        "phases": phases,
    }


def _apply(engine: Engine, documents: list[dict[str, Any]]) -> None:
    """Store `documents` with their customers, in transactions of at most 100 documents."""
    for start in range(0, len(documents), 100):
        with engine.begin() as conn:
            for doc in documents[start : start + 100]:
                upsert_customer(conn, doc["namespace"], doc["customer_id"])
                apply_subscription(conn, validate_document(doc))


def seed_mixed(engine: Engine, count: int, shape: Shape, prefix: str = "sub") -> list[Seeded]:
    """`count` customers, each with one default subscription, in both namespaces (`prefix`_n of cust_`prefix`_n)."""
    seeded = [Seeded(f"{prefix}_{n:05d}", f"cust_{prefix}_{n:05d}", shape.as_of) for n in range(count)]
    _apply(
        engine,
        [
            mixed_document(ns, s.subscription_id, s.customer_id, shape, edited=False)
            for s in seeded
            for ns in NAMESPACES
        ],
    )
    return seeded


def edit_mixed(engine: Engine, seeded: list[Seeded], shape: Shape, *, edited: bool) -> None:
    """Change (or change back) one item of every default subscription, mid-period (not timed)."""
    _apply(
        engine,
        [
            mixed_document(ns, s.subscription_id, s.customer_id, shape, edited=edited)
            for s in seeded
            for ns in NAMESPACES
        ],
    )


def seed_background(engine: Engine, shape: Shape, count: int, days: int) -> list[Seeded]:
    """The other tenants of a live database, synced once and never measured: `count` default subscriptions and one
    daily subscription of `days` (~10 lines a day), in both namespaces. The planner's statistics then count many
    subscriptions of very different sizes, as a production database's do (bench.measure.analyze)."""
    from worker.app.sync import sync_subscription  # only the benchmark's set-up syncs here

    seeded = seed_mixed(engine, count, shape, prefix="bg")
    large = Seeded(f"bg_daily_{days}", f"cust_bg_daily_{days}", scale_as_of(days))
    _apply(engine, [scale_document(ns, large.subscription_id, large.customer_id) for ns in NAMESPACES])
    for s in [*seeded, large]:
        for ns in NAMESPACES:
            sync_subscription(engine, ns, s.subscription_id, as_of=s.as_of)
    return [*seeded, large]


def seed_scale(engine: Engine, days: int, repeats: int) -> list[Seeded]:
    """`repeats` copies of the daily subscription with `days` of history (each copy synced once first)."""
    seeded = [Seeded(f"scale_{days}_{r}", f"cust_scale_{days}_{r}", scale_as_of(days)) for r in range(repeats)]
    _apply(engine, [scale_document(ns, s.subscription_id, s.customer_id) for s in seeded for ns in NAMESPACES])
    return seeded
