"""The generation horizon of docs/sync.md §3.2-§3.3, and how long it holds as `as_of` moves (docs/sync.md §8.6).

`horizon` is how far a sync generates lines in a phase; `generation_holds_until` is the first instant after an
`as_of` at which generation (the horizon and the phase loop of `worker.domain.target.generate_candidates`) may
branch differently: the window of a reusable decision (worker.domain.reuse)."""

from __future__ import annotations

from datetime import datetime

from worker.domain.timeutil import INFINITY, BeyondRangeError, trunc
from worker.domain.view import PhaseView, SubscriptionView


def horizon(view: SubscriptionView, phase: PhaseView, as_of: datetime) -> datetime:
    """docs/sync.md §3.2: the generation limit of a phase."""
    if as_of < view.active_from:
        limit = view.active_from
    else:
        try:
            billing = view.aligned_billing_period(as_of)
        except BeyondRangeError:  # docs/sync.md §3.11: no period ends after this one; nothing lies beyond
            return INFINITY
        limit = as_of if as_of == billing.start else billing.end
    if phase.start > limit:
        limit = min_billable_time(phase)
    return limit


def min_billable_time(phase: PhaseView) -> datetime:
    """docs/sync.md §3.3."""
    best = INFINITY
    for versions in phase.items.values():
        for item in versions:
            if item.price is None:
                continue
            if not item.price.is_flat:
                ends = [e for e in (item.end, phase.end) if e is not None]
                if ends and trunc(min(ends)) <= trunc(item.start):
                    continue
            best = min(best, trunc(item.start))
    return best


def generation_holds_until(view: SubscriptionView, as_of: datetime, stopped_at: datetime | None) -> datetime | None:
    """The first instant after `as_of` at which the target generation (docs/sync.md §3.1-§3.2) may branch
    differently, `as_of` being the only input that moves; None when it may at once, or when proving otherwise
    is not worth it. Generation reads `as_of` in three places only:

    - §3.2 rule 2: `as_of` before the subscription start gives the start as the limit: holds until the start;
    - §3.2 rules 2-3: the aligned billing period at `as_of` (§2.4), and whether `as_of` is exactly its start
      (then the limit is `as_of` itself and moves at once: None). Otherwise the limit is that period's end, the
      same for every instant before it (§2.4 clamps the period to the phase, so an instant before its end is in
      the same phase and the same cadence period). A period ending past the range (§3.11): None;
    - §3.1: the phase loop stops at the first processed phase with no end or an end at or after `as_of`;
      `stopped_at` is that end (None: the loop stopped at an open phase or ran out), and the loop stops there
      again for every instant up to it."""
    if as_of < view.active_from:
        until = view.active_from
    else:
        try:
            billing = view.aligned_billing_period(as_of)
        except BeyondRangeError:
            return None
        if as_of == billing.start:
            return None
        until = billing.end
    if stopped_at is not None:
        until = min(until, stopped_at)
    return until if until > as_of else None
