"""The decide step alone (issue 23): the Python CPU time of building the target and the plan of one loaded
subscription, without the database.

A whole sync's CPU time mixes reading rows, building objects from them and deciding; on a loaded machine a
cut in the decide step (a few % of a 10,000-line sync) is below what an A/B of whole syncs resolves. Here
the subscription's snapshot is loaded once, then the pure `decide` (docs/sync.md §8.1) runs `repeats` times on
it; the figure is the minimum and the median of
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
    """The pure `decide` of docs/sync.md §8.1 on a snapshot loaded once; on a revision from before that step
    existed (`--compare`), its `route_targets` and `plan` instead; None when neither is there."""
    try:
        from worker.domain.decide import decide
        from worker.infra.clock import utcnow
        from worker.infra.ids import new_id
        from worker.store.snapshot import load_snapshot
    except ImportError:
        return _measure_before_decide(engine, seeded, repeats)
    sub = seeded.subscription_id
    now = utcnow()
    with engine.connect() as conn, conn.begin():
        snapshot = load_snapshot(conn, REAL, sub, now=now)
    times = []
    lines = 0
    for _ in range(repeats):
        gc.collect()
        began = time.process_time()
        decide(snapshot, as_of=seeded.as_of, now=now, ids=new_id)
        times.append(time.process_time() - began)
        lines = len(snapshot.persisted.items)  # the lines it stands for (a synced subscription: one per target line)
    return Decide(lines, min(times), statistics.median(times))


def _measure_before_decide(engine: Engine, seeded: Seeded, repeats: int) -> Decide | None:
    try:
        from worker.domain.charges.targets import route_targets  # type: ignore[attr-defined,unused-ignore]
        from worker.domain.planner import plan
        from worker.domain.view import build_view
        from worker.infra.clock import utcnow
        from worker.store.charges import load_subscription_charges  # type: ignore[attr-defined,unused-ignore]
        from worker.store.persisted import load_persisted  # type: ignore[attr-defined,unused-ignore]
        from worker.store.view import load_phases, load_subscription  # type: ignore[attr-defined,unused-ignore]
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
        target, _ = route_targets(view, seeded.as_of, loaded.settlement_mode, persisted, charges)  # type: ignore[arg-type]
        plan(target.lines, persisted)
        times.append(time.process_time() - began)
        lines = len(target.lines)
    return Decide(lines, min(times), statistics.median(times))
