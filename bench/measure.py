"""Timed passes: the real sync and the floor, side by side, on twin subscriptions.

Each pass walks a list of subscriptions. The first one of the list goes through the counting engine
(statements, round trips, executions, rows written — measured once, they do not vary between twins);
every other one is timed on the plain engine: the real sync of the `bench` twin, then the floor of the
`floor` twin (its rows prepared from dry runs before the pass starts).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, text

from bench import floor
from bench.database import CountingEngine, Counts
from bench.seeding import REAL, Seeded
from worker.app.sync import sync_subscription


@dataclass(slots=True)
class Figures:
    """Wall times (seconds) of repeated runs, and the database work of one run."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process's CPU seconds of each run (issue 23)
    counts: Counts | None = None

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else math.nan

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def p95(self) -> float:
        return percentile(self.seconds, 95)


@dataclass(slots=True)
class Comparison:
    """One scenario: the real sync against the floor."""

    name: str
    lines: int = 0  # live lines of one subscription after the scenario
    real: Figures = field(default_factory=Figures)
    floor: Figures = field(default_factory=Figures)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (the value below which q% of the runs fall)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def live_lines(engine: Engine, subscription_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM invoice_lines WHERE namespace = :ns AND subscription_id = :id"
                    " AND deleted_at IS NULL"
                ),
                {"ns": REAL, "id": subscription_id},
            ).scalar_one()
        )


def _sync(subscription: Seeded) -> Callable[[Engine], object]:
    return lambda engine: sync_subscription(engine, REAL, subscription.subscription_id, as_of=subscription.as_of)


def forget_decisions(engine: Engine) -> None:
    """Clear the recorded decisions of the real twins (docs/sync.md §8.6), untimed, keeping their input heads: the
    next pass digests its reads and decides every sync in full (and records again), as the first sync with nothing
    to change after a write does. A revision
    from before migration 0004 (`python -m bench --compare REV`) records nothing: nothing to clear."""
    with engine.begin() as conn:
        recorded = conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'subscription_sync_states'"
                " AND column_name = 'decision_digest' AND table_schema = current_schema())"
            )
        ).scalar_one()
        if not recorded:
            return
        conn.execute(
            text(
                "UPDATE subscription_sync_states SET decision_digest = split_part(decision_digest, ':', 1),"
                " decision_holds_from = NULL, decision_holds_until = NULL WHERE namespace = :ns"
            ),
            {"ns": REAL},
        )


def analyze(engine: Engine, *, enabled: bool = True) -> None:
    """Bring the planner's statistics up to date (`ANALYZE`), untimed, after the benchmark has just grown tables
    from nothing (seeding, a first-sync pass): what autovacuum keeps true of a live database, where every table has
    statistics. Without it the sync's read was prepared (psycopg prepares a statement on its fifth execution) while
    `invoice_lines` was nearly empty, and Postgres kept that generic plan — an index probe on the namespace alone,
    every line of the namespace filtered — for the rest of the run: 0.87 ms of server time per read instead of 0.13
    (docs/performance.md "Planner statistics in the benchmark"). ANALYZE invalidates the cached plans, so the next
    executions plan again on the new statistics. `enabled=False` (`python -m bench --no-analyze`): the old
    measurement, on a database that only autovacuum analyzes."""
    if not enabled:
        return
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


def run_pass(engine: Engine, counting: CountingEngine, subscriptions: Sequence[Seeded], into: Comparison) -> None:
    """Sync every subscription once, real and floor; add the timings (and counts) to `into`.

    The floor's work is prepared for the whole pass first (a twin's state changes only when the floor
    runs on it), so the timed loop alternates only the two measured operations, each preceded by the
    other. (A dry run just before each real sync made that sync ~0.7 ms slower, the floor's not.)"""
    works = [floor.prepare(engine, s.subscription_id, s.as_of) for s in subscriptions]
    settle()
    for n, (subscription, work) in enumerate(zip(subscriptions, works, strict=True)):
        if n == 0:
            into.real.counts = counting.measure(_sync(subscription))
            into.floor.counts = counting.measure(lambda e, w=work: floor.run(e, w))  # type: ignore[misc]
            continue
        began, cpu = time.perf_counter(), time.process_time()
        _sync(subscription)(engine)
        synced, synced_cpu = time.perf_counter(), time.process_time()
        floor.run(engine, work)
        into.real.seconds.append(synced - began)
        into.floor.seconds.append(time.perf_counter() - synced)
        into.real.cpu.append(synced_cpu - cpu)
        into.floor.cpu.append(time.process_time() - synced_cpu)
    into.lines = live_lines(engine, subscriptions[-1].subscription_id)


_frozen_between_passes = False


def as_a_worker_process() -> None:
    """The benchmark's process collects garbage as a booted worker process does (worker.infra.gc_policy): the young
    threshold of the policy, and what the process holds frozen out of collections. On a worker, that is what it
    holds once booted; here, also what `settle` finds alive before each pass (the seeded subscriptions, the
    floor's prepared writes, earlier figures: the benchmark's bookkeeping, which no worker holds), so a collection
    inside a timed sync or floor scans what that run allocated, as it would in a worker (docs/performance.md "The
    garbage collector in a large sync"). A revision from before the policy (`--compare`): CPython's thresholds, the
    same freezing. The process entries call this (`python -m bench`, `python -m bench.profile`); the test suite's
    in-process run does not."""
    global _frozen_between_passes
    _frozen_between_passes = True
    try:
        from worker.infra.gc_policy import apply_gc_policy
    except ImportError:
        gc.freeze()
        return
    apply_gc_policy()


def settle() -> None:
    """Collect the garbage of what ran before (seeding, dry runs, earlier scenarios), untimed: a full
    collection triggered by someone else's garbage (~150 ms after the 10,000-line syncs) would otherwise land
    in whichever timed sync crosses the threshold — the same one in every run, since the work is the same
    (issue 23: a credit sync measured 10x slower by one such pause). Then, in a process set up by
    `as_a_worker_process`, what is left is frozen out of later collections."""
    gc.collect()
    if _frozen_between_passes:
        gc.freeze()


def warm_up(engine: Engine, counting: CountingEngine) -> None:
    """Fill both pools and import everything the first sync touches."""
    for target in (engine, counting.engine):
        with target.connect() as conn:
            conn.execute(text("SELECT 1"))
