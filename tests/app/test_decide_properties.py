"""load → decide → write through Postgres (docs/sync.md §8.1 "Anatomy of a sync"), for random subscriptions, times
and settlement modes: `decide` is a function of the snapshot and the time (the same snapshot, times and id
sequence give equal plans), and a written plan leaves nothing to decide at the same time (docs/sync.md §8.5)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from tests.builders import store_view
from tests.domain.strategies import BASE, as_of_offsets, subscriptions
from worker.domain.charges.routing import SETTLEMENT_MODES
from worker.domain.decide import decide
from worker.domain.view import SubscriptionView
from worker.store.snapshot import load_snapshot
from worker.store.write import write_plan

later = st.integers(min_value=0, max_value=40 * 86400).map(lambda s: timedelta(seconds=s))


def counter(tag: str) -> Callable[[str], str]:
    """A deterministic id source: `prefix_<tag><n>`, n = 1, 2, ..."""
    n = itertools.count(1)
    return lambda prefix: f"{prefix}_{tag}{next(n):06d}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(view=subscriptions(), offset=as_of_offsets, wait=later, mode=st.sampled_from(SETTLEMENT_MODES))
def test_decide_is_deterministic_and_a_written_plan_leaves_nothing_to_decide(
    db: Engine, view: SubscriptionView, offset: timedelta, wait: timedelta, mode: str
) -> None:
    store_view(db, view, settlement_mode=mode)
    as_of = BASE + offset
    now = as_of + wait
    with db.connect() as conn, conn.begin():
        snapshot = load_snapshot(conn, "acme", "sub_01", now=now)
        plan = decide(snapshot, as_of=as_of, now=now, ids=counter("a"))
        assert decide(snapshot, as_of=as_of, now=now, ids=counter("a")) == plan
        write_plan(conn, plan)
    with db.connect() as conn, conn.begin():
        reloaded = load_snapshot(conn, "acme", "sub_01", now=now)
        again = decide(reloaded, as_of=as_of, now=now, ids=counter("b"))
    assert reloaded.sync_state == plan.state  # the write recorded the decided state (docs/sync.md §7)
    assert again.patches == ()
    assert again.is_empty
    assert again.state == plan.state
    if plan.patches:  # the property is not vacuous: the first plan wrote something
        assert not plan.is_empty
