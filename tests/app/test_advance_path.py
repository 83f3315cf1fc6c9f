"""Advance is path independent (docs/credits.md §3.10): one advance at `t` writes the same charges, runs and
allocation rows (ids and `seq` aside) as advancing at every earlier due time in turn and then at `t` — random
credit_only documents (item cadences shorter than the billing cadence, versions starting mid-period, one-time
fees) with credit running short, through Postgres and the app's use cases."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tests.app.test_credits_sync import check_conservation, state
from tests.builders import apply, document, flat, item_version, rate_card, t, unique
from worker.app.charges import advance_customer
from worker.app.credits import GrantRequest, grant_credit
from worker.app.sync import sync_subscription

START = t("2024-01-01")
END = t("2024-03-20")  # the one step, 2.5 billing periods (P1M) in


def day(n: int) -> str:
    return (START + timedelta(days=n)).isoformat().replace("+00:00", "Z")


# (cadence or None for a one-time fee, payment term, amount, first day, days active or None)
item_strategy = st.tuples(
    st.sampled_from(["P3D", "P1W", "P2W", "P1M", "P2M", None]),
    st.sampled_from(["in_advance", "in_arrears"]),
    st.integers(1, 20),
    st.integers(0, 45),
    st.one_of(st.none(), st.integers(1, 60)),
)
# (amount, priority, first effective day, days until expiry or None)
grant_strategy = st.tuples(
    st.integers(1, 60), st.integers(0, 2), st.integers(0, 30), st.one_of(st.none(), st.integers(5, 60))
)


def build(namespace: str, items: list[tuple[Any, ...]]) -> dict[str, Any]:
    versions = {}
    for n, (cadence, term, amount, first, days) in enumerate(items):
        until = None if days is None else day(first + days)
        card = rate_card(f"item {n}", flat(str(amount), term), cadence=cadence)
        versions[f"i{n}"] = [item_version(day(first), until, card)]
    return {**document(namespace, versions), "settlement_mode": "credit_only"}


def next_due(db: Engine, namespace: str) -> datetime | None:
    with db.connect() as conn:
        due: datetime | None = conn.execute(
            text("SELECT min(advance_after) FROM charges WHERE namespace = :ns AND deleted_at IS NULL"),
            {"ns": namespace},
        ).scalar_one()
    return due


def run(db: Engine, items: list[tuple[Any, ...]], grants: list[tuple[Any, ...]], stepwise: bool) -> tuple[object, ...]:
    namespace = unique("path")
    apply(db, build(namespace, items))
    for n, (amount, priority, first, expiry) in enumerate(grants):
        effective = START + timedelta(days=first)
        request = GrantRequest(
            "cust_1",
            "USD",
            Decimal(amount),
            priority=priority,
            effective_at=effective,
            expires_at=None if expiry is None else effective + timedelta(days=expiry),
            id=f"g{n}",
        )
        grant_credit(db, namespace, request, now=START + timedelta(seconds=n))  # the same creation order
    sync_subscription(db, namespace, "sub_1", as_of=END)
    steps = 0
    while stepwise and (due := next_due(db, namespace)) is not None and due <= END:
        advance_customer(db, namespace, "cust_1", as_of=due)
        steps += 1
        assert steps < 1000, "advance left a charge due at the time it was advanced to"
    advance_customer(db, namespace, "cust_1", as_of=END)
    check_conservation(db, namespace)
    # No `steps > 0` here: a document can have nothing due before END (a one-time in-arrears fee that never
    # ends); the example below always steps, and so do most generated documents.
    return state(db, namespace)


@settings(
    max_examples=12,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # each example is tens of transactions: no slow shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(items=st.lists(item_strategy, min_size=1, max_size=3), grants=st.lists(grant_strategy, max_size=3))
@example(  # the case: a P2W in-advance fee under P1M billing and a one-time fee booked before its 2nd period
    items=[("P2W", "in_advance", 10, 0, None), (None, "in_advance", 10, 9, None)], grants=[(25, 1, 0, None)]
)
def test_one_advance_equals_advancing_at_every_due_time(
    db: Engine, items: list[tuple[Any, ...]], grants: list[tuple[Any, ...]]
) -> None:
    assert run(db, items, grants, stepwise=True) == run(db, items, grants, stepwise=False)
