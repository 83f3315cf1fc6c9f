"""Target state of docs/sync.md §3: the lines a subscription should have as of an instant.

`build_target` generates candidates phase by phase (horizon §3.2, recurring §3.4, one-time §3.5),
truncates them (§3.6), applies the force-continuous-lines correction (§3.7) and turns the billable ones
into expected lines (§3.9). Customer-deletion capping (§3.8) happens before anything else.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from worker.domain.errors import InvalidViewError, PeriodGenerationError, TargetTooLargeError
from worker.domain.horizon import generation_holds_until, horizon
from worker.domain.identity import line_identity, version_identity
from worker.domain.money import prorate, proration_ratio, round_cur
from worker.domain.persisted import FORCE_CONTINUOUS, IGNORE, PersistedState
from worker.domain.prices import FlatPrice, Price
from worker.domain.records import value
from worker.domain.timeutil import BeyondRangeError, Period, format_instant, trunc
from worker.domain.view import ItemVersion, PhaseView, SubscriptionView

MAX_PERIODS_PER_VERSION = 1001


@value
class Candidate:
    """One generated period of one item version, before billability (docs/sync.md §3.4, §3.5)."""

    phase: PhaseView
    item: ItemVersion
    index: int
    one_time: bool
    service: Period
    full: Period
    billing: Period
    price: Price
    """The version's price, held here (not looked up through the item: ~5 look-ups per candidate)."""

    @property
    def period_number(self) -> int | None:
        """Its `period[i]` in the identity; None for a one-time item (docs/sync.md §1.6)."""
        return None if self.one_time else self.index

    @property
    def identity(self) -> str:
        """The identity within its phase (docs/sync.md §1.6)."""
        return version_identity(self.item.record.key, self.item.version, self.period_number)

    def full_identity(self, subscription_id: str) -> str:
        """Its `unique_reference_id` (docs/sync.md §1.6)."""
        period = None if self.one_time else self.index
        return line_identity(subscription_id, self.phase.key, self.item.record.key, self.item.version, period)

    def invoice_at(self) -> datetime:
        """docs/sync.md §1.5: in-advance flat fees at the billing start, everything else at the later end."""
        if self.price.in_advance:
            return self.billing.start
        return max(self.service.end, self.billing.end)


@value
class TargetLine:
    """The expected line of a billable candidate (docs/sync.md §3.9)."""

    identity: str
    subscription_id: str
    phase_id: str
    item_id: str
    currency: str
    name: str
    description: str | None
    service_period: Period
    billing_period: Period
    invoice_at: datetime
    price: Price
    feature_key: str | None
    discounts: Mapping[str, Any] | None
    tax_config: Any

    @property
    def is_flat(self) -> bool:
        return self.price.is_flat

    def target(self) -> TargetLine:
        return self


@value
class LineCandidate:
    """A billable candidate's expected line before it is built: its identity, its price (the §3.9 amount for a
    flat fee) and the candidate. The diff (docs/sync.md §5.3-§5.4) reads the identity, the price, the service
    period and, for a patch, `invoice_at`; `target()` builds the `TargetLine` only for a create (docs/performance.md
    "Lines built when needed")."""

    identity: str
    view: SubscriptionView
    candidate: Candidate
    price: Price

    @property
    def service_period(self) -> Period:
        return self.candidate.service

    @property
    def invoice_at(self) -> datetime:
        return self.candidate.invoice_at()

    @property
    def is_flat(self) -> bool:
        return self.price.is_flat

    def target(self) -> TargetLine:
        view, c = self.view, self.candidate
        card = c.item.rate_card
        # Positional, in `TargetLine`'s field order (keyword arguments cost more per line).
        return TargetLine(
            self.identity,
            view.id,
            c.phase.id,
            c.item.record.id,
            view.record.currency,
            card.name,
            card.description,
            c.service,
            c.billing,
            c.invoice_at(),
            self.price,
            card.feature_key,
            card.discounts,
            card.tax_config,
        )


#: What the planner diffs: an expected line, built (`TargetLine`) or not yet (`LineCandidate`).
WantedLine = TargetLine | LineCandidate


@dataclass(frozen=True, slots=True)
class Target:
    lines: tuple[WantedLine, ...]
    max_limit: datetime | None
    """The largest horizon of a processed phase; becomes `next_sync_after` (docs/sync.md §7)."""
    holds_until: datetime | None = None
    """Until when a later `as_of` generates the same (worker.domain.horizon.generation_holds_until)."""


class _Budget:
    """Counts generated candidates against the maximum of one sync (docs/contract.md §3 limits), as they are
    generated: a sync that would plan too much fails before it spends the memory."""

    __slots__ = ("left", "limit", "subscription_id")

    def __init__(self, subscription_id: str, limit: int | None) -> None:
        self.subscription_id = subscription_id
        self.limit = limit
        self.left = -1 if limit is None else limit

    def take(self) -> None:
        if self.left == 0:
            assert self.limit is not None
            raise TargetTooLargeError(self.subscription_id, self.limit)
        self.left -= 1  # unlimited: stays negative, never reaches 0


def build_target(
    view: SubscriptionView,
    as_of: datetime,
    persisted: PersistedState,
    customer_deleted_at: datetime | None = None,
    max_lines: int | None = None,
) -> Target:
    """docs/sync.md §3.1. `max_lines` bounds the candidates generated (TargetTooLargeError beyond it)."""
    generation = generate_candidates(view, as_of, persisted, customer_deleted_at, max_lines)
    lines = tuple(line for c in generation.candidates if (line := expected_line(generation.view, c)) is not None)
    return Target(lines, generation.max_limit, generation.holds_until)


class Generation(NamedTuple):
    view: SubscriptionView  # capped at the customer's deletion (docs/sync.md §3.8)
    candidates: list[Candidate]
    max_limit: datetime | None
    holds_until: datetime | None  # worker.domain.horizon.generation_holds_until


def generate_candidates(
    view: SubscriptionView,
    as_of: datetime,
    persisted: PersistedState,
    customer_deleted_at: datetime | None = None,
    max_lines: int | None = None,
) -> Generation:
    """docs/sync.md §3.1 up to billability: the (capped) view, its truncated candidates after the docs/sync.md §3.7 correction
    from the line- and group-backed `persisted` items, the largest horizon, and until when a later `as_of` takes the
    same branches. One generation feeds both the lines and the charges (docs/credits.md §3.2), under one
    `max_lines` budget."""
    if customer_deleted_at is not None and (view.active_to is None or view.active_to > customer_deleted_at):
        view = view.capped_at(customer_deleted_at)
    budget = _Budget(view.id, max_lines)
    candidates: list[Candidate] = []
    max_limit: datetime | None = None
    stopped_at: datetime | None = None
    for phase in view.phases:
        if phase.is_zero_length or not phase.has_billables:
            continue
        limit = horizon(view, phase, as_of)
        candidates += _truncate(_generate(view, phase, limit, budget))
        max_limit = limit if max_limit is None else max(max_limit, limit)
        if phase.end is None or phase.end >= as_of:
            stopped_at = phase.end
            break
    if _may_continue(persisted):
        candidates = [_continuity_correction(view, c, persisted) for c in candidates]
    return Generation(view, candidates, max_limit, generation_holds_until(view, as_of, stopped_at))


def _generate(view: SubscriptionView, phase: PhaseView, limit: datetime, budget: _Budget) -> list[Candidate]:
    """docs/sync.md §3.4 (recurring) and §3.5 (one-time) for every key of the phase."""
    out: list[Candidate] = []
    for versions in phase.items.values():
        for item in versions:
            if item.price is None:
                continue
            if item.rate_card.billing_cadence is None:
                if (one := _one_time(view, phase, item)) is not None:
                    budget.take()
                    out.append(one)
                continue
            if (view.active_to is not None and item.start >= view.active_to) or (
                phase.end is not None and item.start >= phase.end
            ):
                break  # this key is over: later versions too
            out += _recurring(view, phase, item, limit, budget)
    return out


def _recurring(
    view: SubscriptionView, phase: PhaseView, item: ItemVersion, limit: datetime, budget: _Budget
) -> list[Candidate]:
    out: list[Candidate] = []
    at = item.start
    index = 0
    limit_s = trunc(limit)
    price = _price(item)
    while True:
        try:
            billing = view.aligned_billing_period(at)
            full = view.full_service_period(phase, item, at)
        except BeyondRangeError:
            break  # docs/sync.md §3.11: a period that would end past the year 9999 is not generated
        _check_advances(view, phase, item, out[-1] if out else None, full)
        if item.is_zero_length:
            service = Period(at, at)
        else:
            service = full.intersect(item.start, item.end) or Period(at, at)
        cand = Candidate(phase, item, index, False, service, full, billing, price)
        index += 1
        at = service.end
        if trunc(cand.invoice_at()) > limit_s:
            break
        budget.take()
        out.append(cand)
        if item.end is not None and at >= item.end:
            break
        if phase.end is not None and at >= phase.end:
            break
        if index >= MAX_PERIODS_PER_VERSION:
            break
    return out


def _check_advances(
    view: SubscriptionView, phase: PhaseView, item: ItemVersion, prev: Candidate | None, full: Period
) -> None:
    """docs/sync.md §3.11: every generated period is longer than zero and strictly after the previous one,
    once truncated to whole seconds (the validation makes it so; a violation is never billed twice)."""
    start, end = trunc(full.start), trunc(full.end)
    if end <= start or (prev is not None and (start <= trunc(prev.full.start) or full.start < prev.service.end)):
        where = line_identity(view.id, phase.key, item.record.key, item.version)
        after = "" if prev is None else f" after {prev.full}"
        raise PeriodGenerationError(f"{where}: period {full} is empty or does not advance{after}")


def _one_time(view: SubscriptionView, phase: PhaseView, item: ItemVersion) -> Candidate | None:
    """docs/sync.md §3.5; None when the billing period at its start ends past the year 9999 (docs/sync.md §3.11)."""
    try:
        billing = view.aligned_billing_period(item.start)
    except BeyondRangeError:
        return None
    full = view.full_service_period(phase, item, item.start)
    service = full.intersect(item.start, item.end)
    if service is None:
        if not full.is_zero_length:
            raise InvalidViewError(
                f"{line_identity(view.id, phase.key, item.record.key, item.version)}: one-time item has an empty service period"
            )
        service = full
    return Candidate(phase, item, 0, True, service, full, billing, _price(item))


def _price(item: ItemVersion) -> Price:
    price = item.price
    assert price is not None  # candidates are generated only for priced versions
    return price


def _truncate(candidates: list[Candidate]) -> list[Candidate]:
    """docs/sync.md §3.6: usage candidates whose truncated service period is empty are dropped."""
    out: list[Candidate] = []
    for c in candidates:
        service = c.service.truncated()
        if service.is_empty and not c.price.is_flat:
            continue
        billing, full = c.billing.truncated(), c.full.truncated()
        if service is not c.service or billing is not c.billing or full is not c.full:
            c = replace(c, service=service, billing=billing, full=full)  # `replace` costs ~3 µs: only when needed
        out.append(c)
    return out


def _may_continue(persisted: PersistedState) -> bool:
    """Whether some persisted item carries force-continuous-lines (docs/sync.md §3.7 rule 2). Without one the
    correction leaves every candidate as it is, and the ~3 µs per candidate it costs are saved."""
    for item in persisted.items.values():
        source = item.continuity_source()
        # `annotations` first: nearly every line has none, and an empty mapping cannot carry the flag.
        if source is not None and source.annotations and source.has_annotation(FORCE_CONTINUOUS):
            return True
    return False


def _continuity_correction(view: SubscriptionView, c: Candidate, persisted: PersistedState) -> Candidate:
    """docs/sync.md §3.7: start a period where a manually extended previous line ended."""
    if c.one_time or c.index == 0:
        return c
    own = persisted.get(c.full_identity(view.id))
    if own is not None:
        source = own.continuity_source()
        if source is not None and source.is_subscription_managed and source.has_annotation(IGNORE):
            return c
    previous = persisted.get(line_identity(view.id, c.phase.key, c.item.record.key, c.item.version, c.index - 1))
    if previous is None:
        return c
    source = previous.continuity_source()
    if (
        source is None
        or not source.is_subscription_managed
        or not source.has_annotation(IGNORE)
        or not source.has_annotation(FORCE_CONTINUOUS)
    ):
        return c
    start = trunc(previous.service_period.end)
    if c.service.start == start:
        return c
    if c.service.start != c.full.start:
        raise InvalidViewError(
            f"{c.full_identity(view.id)}: cannot continue the previous line at "
            f"{format_instant(start)}: the service period does not start at its full service period"
        )
    billing = c.billing
    if c.full.start == c.billing.start:
        billing = Period(start, billing.end)
    return replace(c, service=Period(start, c.service.end), full=Period(start, c.full.end), billing=billing)


def is_billable(c: Candidate) -> bool:
    """docs/sync.md §3.9: in-arrears prices need a full service period of non-zero length."""
    if c.price.in_advance:
        return True
    return not c.full.is_zero_length


def prorates(view: SubscriptionView, c: Candidate) -> bool:
    """docs/sync.md §3.9: flat prices prorate, except the period that ends at or after the subscription end."""
    record = view.record
    if not record.pro_rating_enabled or record.pro_rating_mode != "prorate_prices":
        return False
    if not c.price.is_flat:
        return False
    return not (view.active_to is not None and view.active_to <= c.service.end)


def flat_amount(view: SubscriptionView, c: Candidate, price: FlatPrice) -> Decimal:
    """docs/sync.md §3.9: the rounded amount, prorated by service over full seconds when `prorates()`."""
    return flat_price(view, c, price).amount


@functools.lru_cache(maxsize=4096)
def _rounded(price: FlatPrice, currency: str) -> FlatPrice:
    """The price with its amount rounded to the currency: one object per price version, not one per line
    (prices equal in value round to the same amount with the same exponent, so sharing the key is safe)."""
    return price.with_amount(round_cur(price.amount, currency))


def flat_price(view: SubscriptionView, c: Candidate, price: FlatPrice) -> FlatPrice:
    """`price` with the amount of docs/sync.md §3.9. A whole period, like an empty full period, has the ratio
    exactly 1 and so the rounded amount: it skips the exact product (~4 µs a line) and shares the version's
    rounded price (~2 µs a line of a 10,000-line sync, docs/performance.md "Results")."""
    s, f = c.service, c.full  # equal periods (often the same object) have the ratio 1: no seconds counted
    if (s is not f and (s.start != f.start or s.end != f.end)) and not s.is_empty and prorates(view, c):
        service, full = s.seconds(), f.seconds()
        if service != full and full > 0:
            return price.with_amount(prorate(price.amount, proration_ratio(service, full), view.record.currency))
    return _rounded(price, view.record.currency)


def expected_line(view: SubscriptionView, c: Candidate, identity: str | None = None) -> TargetLine | None:
    """The expected line of a candidate, or None when it is not billable or its amount is zero. `identity`: the
    candidate's `full_identity`, when the caller has it already."""
    wanted = line_candidate(view, c, c.full_identity(view.id) if identity is None else identity)
    return wanted.target() if wanted is not None else None


def line_candidate(view: SubscriptionView, c: Candidate, identity: str) -> LineCandidate | None:
    """`expected_line` without building the line (docs/sync.md §3.9): None when the candidate is not billable or
    its amount is zero."""
    if not is_billable(c):
        return None
    price: Price = c.price
    if isinstance(price, FlatPrice):
        price = flat_price(view, c, price)
        if price.amount == 0:
            return None
    return LineCandidate(identity, view, c, price)
