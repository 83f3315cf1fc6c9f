"""`python -m bench --scale` (issue 25): how the cost grows with subscriptions, customers and workers.

Two scratch databases of its own, each with two template subscriptions, SQL copies of them
(`bench.scale_seed`) and a probe subscription (the default bench shape, through the real write path): the small
one with 10 copies, the large one with N copies across C customers by `generate_series`, plus customers
`hot-<k>` with k subscriptions each. The probe's steady-state sync is timed in both, alternately (so both see
the same machine load). Then, in the large one:

1. the hot statements' plans (`bench.scale_plans`), EXPLAIN (ANALYZE, BUFFERS) of what the real code sent;
2. the `reconcile_due` fan-out (`bench.scale_fanout`) with D subscriptions due;
3. one sync of a subscription of each hot customer, and a burst of events for all k subscriptions of it next to
   the same number spread over k customers, through 2 worker processes x T threads (`bench.scale_workers`);
4. K = 1, 2, 4 worker processes x T threads draining the same backlog of B events.

PASS/FAIL: the fan-out enqueues at least 5,000 subscriptions/s, every hot plan reads big tables through an index,
and the probe's sync time at N is within 1.5x of its time next to 10 subscriptions.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from bench import credits
from bench.capture import capture
from bench.database import scratch_database, server_url, timing_engine
from bench.scale_fanout import FanOut
from bench.scale_fanout import measure as measure_fanout
from bench.scale_plans import HotPlan, Paths, explain_hot
from bench.scale_seed import (
    LINES_SHAPE,
    NAMESPACE,
    Sizes,
    analyze,
    customer_of,
    hot_customer,
    hot_prefix,
    row_counts,
    seed,
    seed_customer,
    seed_templates,
)
from bench.scale_workers import Batch, Drained, run_pool
from bench.seeding import Shape, _apply, mixed_document
from worker.app.sync import sync_subscription
from worker.bootstrap import redis_url as resolve_redis_url
from worker.config import load_settings

PROBE = "probe"
PROBE_CUSTOMER = "probe-cust"
PROBE_SHAPE = Shape(phases=2, items=4, months=6)  # the default bench subscription
SMALL = 10  # "10 other subscriptions"
FANOUT_TARGET = 5_000.0  # subscriptions/s
SYNC_RATIO_LIMIT = 1.5


@dataclass(frozen=True, slots=True)
class ScaleOptions:
    subscriptions: int = 1_000_000
    customers: int = 10_000
    due: int = 100_000
    never_synced: int = 1_000
    hot: tuple[int, ...] = (1, 10, 100, 1000)
    backlog: int = 2_000
    processes: tuple[int, ...] = (1, 2, 4)
    threads: int = 2
    sync_repeats: int = 30
    keep: bool = False


@dataclass(slots=True)
class ProbeTiming:
    others: int
    median_ms: float
    p90_ms: float
    statements: int


@dataclass(slots=True)
class ScaleResults:
    options: ScaleOptions
    where: str = ""
    seed_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    small: ProbeTiming | None = None
    large: ProbeTiming | None = None
    plans: list[HotPlan] = field(default_factory=list)
    fanout: FanOut | None = None
    hot_sync_ms: dict[int, float] = field(default_factory=dict)
    bursts: list[Drained] = field(default_factory=list)
    pools: list[Drained] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    load: list[tuple[str, tuple[float, float, float]]] = field(default_factory=list)
    elapsed: float = 0.0


def as_of_of(g: int, credit_every: int) -> datetime:
    """The instant a copy was synced as of (its template's): a steady-state sync."""
    return credits.as_of(1) if g % credit_every == 0 else LINES_SHAPE.as_of


def _timed(engine: Engine, subscription_id: str, as_of: datetime) -> float:
    began = time.perf_counter()
    sync_subscription(engine, NAMESPACE, subscription_id, as_of=as_of)
    return (time.perf_counter() - began) * 1000


def _timing(times: list[float], others: int, statements: int) -> ProbeTiming:
    times = sorted(times)
    return ProbeTiming(others, statistics.median(times), times[int(0.9 * (len(times) - 1))], statements)


def _statements(engine: Engine, subscription_id: str, as_of: datetime) -> int:
    sync_subscription(engine, NAMESPACE, subscription_id, as_of=as_of)  # warm: plans cached, pages in memory
    with capture(engine) as captured:
        sync_subscription(engine, NAMESPACE, subscription_id, as_of=as_of)
    return len(captured)


def time_sync(engine: Engine, subscription_id: str, as_of: datetime, repeats: int, others: int) -> ProbeTiming:
    """Steady-state syncs of one subscription: median and p90 wall time, statements per sync."""
    statements = _statements(engine, subscription_id, as_of)
    return _timing([_timed(engine, subscription_id, as_of) for _ in range(repeats)], others, statements)


def time_pair(small: Engine, large: Engine, repeats: int, others: tuple[int, int]) -> tuple[ProbeTiming, ProbeTiming]:
    """The probe's steady-state sync in the small and the large database, alternately (small, large, small, …):
    both medians see the same machine load, which on a shared machine varies more than the sync does."""
    counts = [_statements(engine, PROBE, PROBE_SHAPE.as_of) for engine in (small, large)]
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for n, engine in enumerate((small, large)):
            times[n].append(_timed(engine, PROBE, PROBE_SHAPE.as_of))
    return _timing(times[0], others[0], counts[0]), _timing(times[1], others[1], counts[1])


def run(options: ScaleOptions) -> ScaleResults:
    began = time.perf_counter()
    results = ScaleResults(options)
    redis_url = resolve_redis_url(load_settings())
    server = server_url()
    with scratch_database(server, keep=options.keep) as url, scratch_database(server) as small_url:
        results.where = url.rsplit("/", 1)[-1]
        engine, small = timing_engine(url), timing_engine(small_url)
        try:
            _run_on(engine, small, url, redis_url, options, results)
        finally:
            engine.dispose()
            small.dispose()
    results.elapsed = time.perf_counter() - began
    return results


def _seed_probe(engine: Engine, sizes: Sizes, now: datetime) -> float:
    """Templates, copies s-1..s-N, the probe subscription; analyzed. Seconds the copies took."""
    seed_templates(engine)
    seconds = seed(engine, sizes, now)
    _apply(engine, [mixed_document(NAMESPACE, PROBE, PROBE_CUSTOMER, PROBE_SHAPE, edited=False)])
    analyze(engine)
    return seconds


def _load(results: ScaleResults, when: str) -> None:
    results.load.append((when, os.getloadavg()))


def _run_on(engine: Engine, small: Engine, url: str, redis_url: str, o: ScaleOptions, results: ScaleResults) -> None:
    now = datetime.now(UTC)
    _load(results, "start")
    sizes = Sizes(o.subscriptions, o.customers, o.due, never_synced=o.never_synced)
    _seed_probe(small, Sizes(min(SMALL, o.subscriptions), o.customers, o.due), now)  # its own database
    results.seed_seconds = _seed_probe(engine, sizes, now)
    for k in o.hot:
        seed_customer(engine, k, sizes, now)
    analyze(engine)
    results.rows = row_counts(engine)
    _load(results, "seeded")
    others = (min(SMALL, o.subscriptions), o.subscriptions + sum(o.hot))
    results.small, results.large = time_pair(small, engine, o.sync_repeats, others)

    credit = sizes.credit_every
    due_customer = customer_of(credit * 10, o.customers)  # its copy s-<10·credit_every> has due charges
    paths = Paths(
        NAMESPACE, [(f"s-{SMALL + 1}", as_of_of(1, credit)), (f"s-{credit}", as_of_of(credit, credit))], due_customer
    )
    results.plans = explain_hot(engine, paths, results.rows)
    _load(results, "plans")
    results.fanout = measure_fanout(engine, redis_url)
    _load(results, "fan-out")

    for k in o.hot:
        results.hot_sync_ms[k] = time_sync(engine, f"{hot_prefix(k)}1", as_of_of(1, credit), 10, k).median_ms

    def batch(label: str, ids: list[tuple[str, int]]) -> Batch:
        return Batch(label, [(s, as_of_of(g, credit)) for s, g in ids])

    warm = batch("warm-up", [(f"s-{g}", g) for g in range(1, 21)])
    bursts = []
    for k in o.hot:
        bursts.append(
            batch(
                f"{hot_customer(k)}: {k} subscription(s) of one customer",
                [(f"{hot_prefix(k)}{g}", g) for g in range(1, k + 1)],
            )
        )
        spread = min(k, o.customers, o.subscriptions)
        bursts.append(
            batch(
                f"spread: {spread} subscription(s) of {spread} customers", [(f"s-{g}", g) for g in range(1, spread + 1)]
            )
        )
    try:
        results.bursts = run_pool(engine, url, redis_url, processes=2, threads=o.threads, warmup=warm, batches=bursts)
    except Exception as exc:  # measured what we could; say why the rest is missing
        results.errors.append(f"burst: {type(exc).__name__}: {exc}")
    _load(results, "bursts")

    backlog = batch(f"backlog of {o.backlog}", [(f"s-{g}", g) for g in range(1, min(o.backlog, o.subscriptions) + 1)])
    for k in o.processes:
        try:
            results.pools += run_pool(
                engine, url, redis_url, processes=k, threads=o.threads, warmup=warm, batches=[backlog]
            )
        except Exception as exc:
            results.errors.append(f"{k} process(es): {type(exc).__name__}: {exc}")
        _load(results, f"{k} process(es)")
