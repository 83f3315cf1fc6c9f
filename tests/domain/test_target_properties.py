"""Invariants of the target builder (docs/sync.md §3), checked on random subscriptions."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.domain.builders import EMPTY, persisted_from
from tests.domain.strategies import BASE, as_of_offsets, subscriptions
from worker.domain.planner import plan
from worker.domain.prices import FlatPrice
from worker.domain.target import build_target
from worker.domain.view import build_view

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(view=subscriptions(), offset=as_of_offsets)
def test_identities_are_unique(view, offset) -> None:  # type: ignore[no-untyped-def]
    lines = build_target(view, BASE + offset, EMPTY).lines
    ids = [line.identity for line in lines]
    assert len(ids) == len(set(ids))


@PROPS
@given(view=subscriptions(), offset=as_of_offsets)
def test_periods_of_one_version_tile_without_gaps_or_overlaps(view, offset) -> None:  # type: ignore[no-untyped-def]
    lines = build_target(view, BASE + offset, EMPTY).lines
    by_version = defaultdict(list)
    for line in lines:
        if "/period[" in line.identity:
            base, index = line.identity.rsplit("/period[", 1)
            by_version[base].append((int(index.rstrip("]")), line))
    for entries in by_version.values():
        entries.sort(key=lambda e: e[0])
        for (i, a), (j, b) in itertools.pairwise(entries):
            # indexes may skip only where a zero-amount line was dropped; consecutive ones touch exactly
            if j == i + 1:
                assert a.service_period.end == b.service_period.start
            assert a.service_period.end <= b.service_period.start


@PROPS
@given(view=subscriptions(same_cadence=True), offset=as_of_offsets)
def test_service_period_lies_inside_billing_period_for_equal_cadences(view, offset) -> None:  # type: ignore[no-untyped-def]
    for line in build_target(view, BASE + offset, EMPTY).lines:
        if "/period[" not in line.identity:
            continue  # one-time items take the billing period at their start
        assert line.billing_period.start <= line.service_period.start
        assert line.service_period.end <= line.billing_period.end


@PROPS
@given(view=subscriptions(), offset=as_of_offsets)
def test_prorated_amounts_never_exceed_the_full_amount(view, offset) -> None:  # type: ignore[no-untyped-def]
    cards = {
        item.record.id: item.price for phase in view.phases for versions in phase.items.values() for item in versions
    }
    for line in build_target(view, BASE + offset, EMPTY).lines:
        full = cards[line.item_id]
        if isinstance(line.price, FlatPrice):
            assert isinstance(full, FlatPrice)
            assert 0 < line.price.amount <= full.amount


@PROPS
@given(view=subscriptions(), offset=as_of_offsets, seed=st.integers(0, 2**32))
def test_independent_of_phase_and_item_order(view, offset, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    phases = list(view.phase_records)
    rng.shuffle(phases)
    shuffled = [replace(p, items=tuple(rng.sample(p.items, len(p.items)))) for p in phases]
    other = build_view(view.record, shuffled)
    as_of = BASE + offset
    assert build_target(view, as_of, EMPTY) == build_target(other, as_of, EMPTY)


@PROPS
@given(view=subscriptions(), offset=as_of_offsets)
def test_second_sync_plans_nothing(view, offset) -> None:  # type: ignore[no-untyped-def]
    as_of = BASE + offset
    first = build_target(view, as_of, EMPTY)
    persisted = persisted_from(first)
    again = build_target(view, as_of, persisted)
    assert plan(again.lines, persisted).is_empty


@PROPS
@given(view=subscriptions(), offset=as_of_offsets)
def test_every_kept_line_is_within_the_horizon(view, offset) -> None:  # type: ignore[no-untyped-def]
    target = build_target(view, BASE + offset, EMPTY)
    for line in target.lines:
        if "/period[" in line.identity:
            assert target.max_limit is not None
            assert line.invoice_at <= target.max_limit.replace(microsecond=0)
