"""The subscription view of docs/sync.md §2: ordered phases, their cadences, item versions and their windows.

`build_view` turns the stored rows (as plain records) into a view whose phase ends and item windows are
derived once; `SubscriptionView.capped_at` rebuilds it with another end (customer deletion, docs/sync.md §3.8).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from worker.domain.errors import InvalidViewError
from worker.domain.identity import line_identity
from worker.domain.prices import Price
from worker.domain.timeutil import BeyondRangeError, Duration, Period, format_instant, period_at, period_bounds_at


@dataclass(frozen=True, slots=True)
class RateCard:
    name: str
    description: str | None
    feature_key: str | None
    billing_cadence: Duration | None
    price: Price | None
    discounts: Mapping[str, Any] | None
    tax_config: Any


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One stored item row (one version of a key)."""

    id: str
    key: str
    active_from: datetime
    active_to: datetime | None
    rate_card: RateCard
    annotations: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PhaseRecord:
    id: str
    key: str
    name: str
    active_from: datetime
    sort_hint: int | None
    items: tuple[ItemRecord, ...]


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    namespace: str
    id: str
    customer_id: str
    currency: str
    billing_cadence: Duration
    billing_anchor: datetime
    pro_rating_enabled: bool
    pro_rating_mode: str
    active_from: datetime
    active_to: datetime | None


@dataclass(frozen=True, slots=True)
class ItemVersion:
    """An item row with its version number and its window clamped to the phase (docs/sync.md §2.3)."""

    record: ItemRecord
    version: int
    start: datetime
    end: datetime | None

    @property
    def rate_card(self) -> RateCard:
        return self.record.rate_card

    @property
    def price(self) -> Price | None:
        return self.record.rate_card.price

    @property
    def is_zero_length(self) -> bool:
        return self.end is not None and self.end <= self.start

    def is_active_at(self, t: datetime) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True, slots=True)
class PhaseView:
    record: PhaseRecord
    start: datetime
    end: datetime | None
    items: Mapping[str, tuple[ItemVersion, ...]]

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def is_zero_length(self) -> bool:
        return self.end is not None and self.end == self.start

    @property
    def has_billables(self) -> bool:
        return any(v.price is not None for versions in self.items.values() for v in versions)

    def is_active_at(self, t: datetime) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    record: SubscriptionRecord
    phases: tuple[PhaseView, ...]
    phase_records: tuple[PhaseRecord, ...]
    _billing_periods: dict[datetime, Period] = field(default_factory=dict, init=False, repr=False, compare=False)
    """`aligned_billing_period` by instant: the items of a phase share their period starts, so a sync asks for
    the same instant once per item (a view is immutable: the memo never goes stale)."""

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def active_from(self) -> datetime:
        return self.record.active_from

    @property
    def active_to(self) -> datetime | None:
        return self.record.active_to

    @property
    def has_billables(self) -> bool:
        return any(p.has_billables for p in self.phases)

    def is_active_at(self, t: datetime) -> bool:
        return self.active_from <= t and (self.active_to is None or t < self.active_to)

    def capped_at(self, end: datetime) -> SubscriptionView:
        """The same subscription as if it ended at `end` (phases and item windows recomputed)."""
        return build_view(replace(self.record, active_to=end), self.phase_records)

    def aligned_billing_period(self, t: datetime) -> Period:
        """docs/sync.md §2.4; callers handle `t` before the subscription start. BeyondRangeError when the period
        would end past the representable range (docs/sync.md §3.11)."""
        known = self._billing_periods.get(t)
        if known is not None:
            return known
        period = self._aligned_billing_period(t)
        self._billing_periods[t] = period
        return period

    def _aligned_billing_period(self, t: datetime) -> Period:
        if t < self.active_from:
            raise InvalidViewError(f"{format_instant(t)} is before the subscription start")
        phase = self._phase_for_billing(t)
        start, end = period_bounds_at(self.record.billing_anchor, self.record.billing_cadence, t)
        if phase.end is not None and (end is None or phase.end < end):
            end = phase.end
        if end is None:
            raise BeyondRangeError(f"the billing period at {format_instant(t)} ends after the year 9999")
        if phase.start > start:
            start = phase.start
        return Period(start, end)

    def _phase_for_billing(self, t: datetime) -> PhaseView:
        limit = t if self.is_active_at(t) else self.active_to
        assert limit is not None  # not active and not before the start: it has an end
        chosen: PhaseView | None = None
        for phase in self.phases:
            if phase.start <= limit:
                chosen = phase
        if chosen is None:
            raise InvalidViewError(f"no phase of subscription {self.id} is active at {format_instant(t)}")
        return chosen

    def full_service_period(self, phase: PhaseView, item: ItemVersion, at: datetime) -> Period:
        """docs/sync.md §2.5, with its consistency checks; BeyondRangeError past the range (docs/sync.md §3.11)."""
        self._check_generation_point(phase, item, at)
        cadence = item.rate_card.billing_cadence
        if cadence is not None:
            return period_at(self.record.billing_anchor, cadence, at)
        end = item.start
        if item.end is not None:
            end = item.end
        if phase.end is not None:
            end = phase.end
        return Period(item.start, end)

    def _check_generation_point(self, phase: PhaseView, item: ItemVersion, at: datetime) -> None:
        active_to, phase_end, item_end = self.active_to, phase.end, item.end
        if (
            self.active_from <= at
            and (active_to is None or at <= active_to)
            and phase.start <= at
            and (phase_end is None or at < phase_end)
            and item.start <= at
            and (item_end is None or at < item_end)
        ):
            return  # inside all three windows (every period of a sync): no method calls (~2 µs a line)
        problem = None
        if at < self.active_from or (self.active_to is not None and at > self.active_to):
            problem = "outside the subscription"
        elif not (phase.is_active_at(at) or at == self.active_to):
            problem = "the phase is not active"
        elif not (item.is_active_at(at) or (item.is_zero_length and item.start == at)):
            problem = "the item is not active"
        if problem is not None:
            where = f"{line_identity(self.id, phase.key, item.record.key, item.version)} at {format_instant(at)}"
            raise InvalidViewError(f"{where}: {problem}")


def _phase_order(a: PhaseRecord, b: PhaseRecord) -> int:
    """docs/sync.md §2.1: by start; ties by sort hint when both have one; remaining ties by key."""
    if a.active_from != b.active_from:
        return -1 if a.active_from < b.active_from else 1
    if a.sort_hint is not None and b.sort_hint is not None and a.sort_hint != b.sort_hint:
        return -1 if a.sort_hint < b.sort_hint else 1
    return (a.key > b.key) - (a.key < b.key)


def _version_order(item: ItemRecord) -> tuple[datetime, bool, datetime, str]:
    """docs/sync.md §2.1: by start, then end (open last), then id (project tie-break)."""
    return (item.active_from, item.active_to is None, item.active_to or item.active_from, item.id)


def _item_window(
    item: ItemRecord, phase_start: datetime, phase_end: datetime | None
) -> tuple[datetime, datetime | None]:
    """docs/sync.md §2.3: the item row's window clamped to its phase."""
    start = max(item.active_from, phase_start)
    if phase_end is not None and phase_end < start:
        return phase_end, phase_end
    ends = [e for e in (item.active_to, phase_end) if e is not None]
    return start, (min(ends) if ends else None)


def build_view(record: SubscriptionRecord, phases: Sequence[PhaseRecord]) -> SubscriptionView:
    ordered = sorted(phases, key=functools.cmp_to_key(_phase_order))
    views: list[PhaseView] = []
    for i, phase in enumerate(ordered):
        start = phase.active_from
        end = ordered[i + 1].active_from if i + 1 < len(ordered) else None
        if record.active_to is not None and (end is None or record.active_to < end):
            end = record.active_to
        if end is not None and end < start:
            end = start
        by_key: dict[str, list[ItemRecord]] = {}
        for item in phase.items:
            by_key.setdefault(item.key, []).append(item)
        items = {
            key: tuple(
                ItemVersion(rec, n, *_item_window(rec, start, end))
                for n, rec in enumerate(sorted(recs, key=_version_order))
            )
            for key, recs in sorted(by_key.items())
        }
        views.append(PhaseView(phase, start, end, items))
    return SubscriptionView(record, tuple(views), tuple(ordered))
