"""A decision that wrote nothing, reused while nothing it read has changed (docs/sync.md §8.6).

A sync is a pure function of what its one read returns, the subscription and customer rows, the code and the
`as_of` (§8.5). When a decision wrote nothing, the sync state records a `DecisionToken`: a digest of those
inputs (computed by the store, worker.store.snapshot) and the `as_of` window over which the target's generation
(§3.1-§3.2) takes the same branches. A later sync whose `as_of` lies in that window and whose read digests to
the same value would decide the same empty plan: it is not decided again. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.domain.timeutil import BeyondRangeError
from worker.domain.view import SubscriptionView


@dataclass(frozen=True, slots=True)
class DecisionToken:
    """`digest` of a decision's inputs (worker.store.snapshot); `[holds_from, holds_until)`: the `as_of` window over
    which the same inputs decide the same plan (`generation_holds_until`)."""

    digest: str
    holds_from: datetime
    holds_until: datetime

    def covers(self, as_of: datetime) -> bool:
        return self.holds_from <= as_of < self.holds_until


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
