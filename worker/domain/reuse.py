"""A decision that wrote nothing, reused while nothing it read has changed (docs/sync.md §8.6).

A sync is a pure function of what its one read returns, the subscription and customer rows, the code and the
`as_of` (§8.5). When a decision wrote nothing, the sync state records a `DecisionToken`: a digest of those
inputs (computed by the store, worker.store.snapshot) and the `as_of` window over which the target's generation
(§3.1-§3.2) takes the same branches. A later sync whose `as_of` lies in that window and whose read digests to
the same value would decide the same empty plan: it is not decided again. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class DecisionToken:
    """`digest` of a decision's inputs (worker.store.snapshot); `[holds_from, holds_until)`: the `as_of` window over
    which the same inputs decide the same plan (worker.domain.horizon.generation_holds_until)."""

    digest: str
    holds_from: datetime
    holds_until: datetime

    def covers(self, as_of: datetime) -> bool:
        return self.holds_from <= as_of < self.holds_until
