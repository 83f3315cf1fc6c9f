"""The decide step alone (issue 23): the Python CPU time of building the target and the plan of one loaded
subscription, without the database.

A whole sync's CPU time mixes reading rows, building objects from them and deciding; on a loaded machine a
cut in the decide step (a few % of a 10,000-line sync) is below what an A/B of whole syncs resolves. Here
the subscription's state is loaded once, then `route_targets` and `plan` (what `worker.app.sync` runs
between its reads and its writes) run `repeats` times on it; the figure is the minimum and the median of
their CPU times (`time.process_time`), a full garbage collection before each.

It calls the store's loaders and the domain directly: if a revision names them otherwise, `measure`
returns None and the figure is left out (`--compare` then shows it on one side only).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from bench.seeding import REAL, Seeded


@dataclass(frozen=True, slots=True)
class Decide:
    lines: int
    cpu_min: float  # seconds
    cpu_median: float


def measure(engine: Engine, seeded: Seeded, repeats: int = 7) -> Decide | None:
    try:
        from worker.domain.charges.targets import route_targets
        from worker.domain.planner import plan
        from worker.domain.view import build_view
        from worker.infra.clock import utcnow
        from worker.store.charges import load_subscription_charges
        from worker.store.persisted import load_persisted
        from worker.store.view import load_phases, load_subscription
    except ImportError:
        return None
    sub = seeded.subscription_id
    with engine.connect() as conn:
        loaded = load_subscription(conn, REAL, sub)
        phases = load_phases(conn, REAL, sub, utcnow())
        persisted = load_persisted(conn, REAL, sub)
        charges = load_subscription_charges(conn, REAL, sub)
    times = []
    lines = 0
    for _ in range(repeats):
        gc.collect()
        began = time.process_time()
        view = build_view(loaded.record, phases)
        target, _ = route_targets(view, seeded.as_of, loaded.settlement_mode, persisted, charges)
        plan(target.lines, persisted)
        times.append(time.process_time() - began)
        lines = len(target.lines)
    return Decide(lines, min(times), statistics.median(times))
