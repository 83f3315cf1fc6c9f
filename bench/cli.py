"""`python -m bench`: how many subscriptions per second per worker, and what happens at 10,000 lines.

Seeds N customers each with one subscription (P phases x I items x M months of history per phase, a
mix of flat in-advance, flat in-arrears, unit-priced usage and one-time items) in a scratch database
on the configured Postgres (`DATABASE_URL`, else the embedded server), then measures:

1. the first sync (creates every line), 2. a steady-state sync (nothing to change), 3. a sync after an
edit (one item changed mid-period), 4. end to end through Redis with K worker processes;

each next to the floor (the same database work in three hand-written statements, no planning), the
scaling of one subscription from 10 to 10,000 lines, and the same three syncs of a credit_only
subscription (charges instead of lines, `bench.credits`) at two sizes. Before all of that, while the
server is quiet, the start-up of the `subsync` command (`bench.startup`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text

from bench import credits, decide, seeding, startup
from bench.database import CountingEngine, scratch_database, server_url, timing_engine
from bench.e2e import EndToEnd, run_end_to_end
from bench.measure import Comparison, analyze, as_a_worker_process, forget_decisions, run_pass, settle, warm_up
from bench.queue_report import machine_load
from bench.report import Results, ScalePoint, render
from worker.config import describe_url
from worker.infra.logging import configure_logging


@dataclass(frozen=True, slots=True)
class Options:
    subscriptions: int = 200  # N
    phases: int = 2  # P
    items: int = 4  # I
    months: int = 6  # M, per phase
    repeats: int = 3  # passes of the steady-state and edit scenarios, and end-to-end rounds
    workers: int = 2  # K worker processes end to end (0: skip)
    threads: int = 2  # threads per worker process
    scale_days: tuple[int, ...] = (1, 10, 100, 1000)  # ~10 lines per day: 14, 104, 1004, 10004 lines
    scale_repeats: int = 3  # timed first syncs (and steady-state syncs) per size
    keep: bool = False
    startup_repeats: int = 7  # runs of each command of the start-up section (0: skip it)
    startup_only: bool = False
    credit_months: tuple[int, ...] = (12, 24)  # credits scenario: ~3 x (M + 1) charges per size (empty: skip)
    json_path: str | None = None  # also write the figures (bench.figures) to this file
    compare: str | None = None  # A/B against this git revision (bench.compare)
    rounds: int = 6  # interleaved rounds per side of --compare (6 all on one side: sign test p = 0.031)
    analyze: bool = True  # ANALYZE after seeding and after each first-sync pass (bench.measure.analyze)


QUICK = Options(subscriptions=50, repeats=2, workers=1, threads=2, scale_repeats=1, startup_repeats=3)


def run(options: Options, database_url: str | None = None, *, scratch: bool = True) -> Results:
    """Run the whole benchmark. With `scratch` (the default) a new database is created next to
    `database_url` (default: `DATABASE_URL` or the embedded server) and dropped afterwards; without it,
    `database_url` must be an empty migrated database (the test suite's)."""
    url = database_url or server_url()
    if options.startup_only:
        with scratch_database(url, keep=options.keep) as db_url:
            began = time.perf_counter()
            startup.seed(db_url)
            results = Results(
                [f"subsync start-up — Python {platform.python_version()}, {_cpus()} CPU(s)"], [], None, None, []
            )
            results.startup = startup.measure(db_url, repeats=options.startup_repeats)
            results.elapsed = time.perf_counter() - began
            return results
    if not scratch:
        return _run_on(url, options, describe_url(url))
    with scratch_database(url, keep=options.keep) as db_url:
        results = _run_on(db_url, options, describe_url(db_url))
    if options.keep:
        results.notes.append(f"kept the scratch database: {describe_url(db_url)}")
    return results


def _run_on(url: str, options: Options, where: str) -> Results:
    began = time.perf_counter()
    load = machine_load()
    measured_startup = None
    if options.startup_repeats > 0:
        # First, before anything is seeded or synced: measured after the heavy sections, the read commands
        # ran while Postgres still worked on their writes (bench/startup.py).
        startup.seed(url)
        measured_startup = startup.measure(url, repeats=options.startup_repeats)
    engine = timing_engine(url)
    counting = CountingEngine(url)
    background_days = max(options.scale_days, default=100)  # the large tenant of seeding.seed_background
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
        shape = seeding.Shape(options.phases, options.items, options.months)
        mixed = seeding.seed_mixed(engine, options.subscriptions, shape)
        # One extra copy per size: the first of each list is the one the counting pass uses. Sizes under
        # 1,000 lines are cheap and noisy: at least 10 timed runs each.
        scale = [
            seeding.seed_scale(
                engine, days, (options.scale_repeats if days >= 100 else max(options.scale_repeats, 10)) + 1
            )
            for days in options.scale_days
        ]
        # The other tenants of a live database, then its statistics (bench.measure.analyze)
        seeding.seed_background(engine, shape, options.subscriptions, background_days)
        if options.credit_months:
            credits.seed_background(engine, max(2, options.subscriptions // 5))
        analyze(engine, enabled=options.analyze)
        warm_up(engine, counting)

        first, steady, edit = Comparison("first sync"), Comparison("steady state"), Comparison("after an edit")
        run_pass(engine, counting, mixed, first)
        analyze(engine, enabled=options.analyze)
        for _ in range(options.repeats):
            forget_decisions(engine)  # decided in full, each sync recording its decision (docs/sync.md §8.6)
            run_pass(engine, counting, mixed, steady)
        reused = Comparison("steady state, reused")
        for _ in range(options.repeats):
            run_pass(engine, counting, mixed, reused)
        for n in range(options.repeats):
            seeding.edit_mixed(engine, mixed, shape, edited=n % 2 == 0)
            run_pass(engine, counting, mixed, edit)

        e2e: EndToEnd | None = None
        e2e_error = None
        if options.workers > 0:
            try:
                e2e = run_end_to_end(
                    engine, url, mixed, processes=options.workers, threads=options.threads, rounds=options.repeats
                )
            except Exception as exc:  # measured what we could; say why the rest is missing
                e2e_error = f"{type(exc).__name__}: {exc}"

        points = []
        for copies in scale:
            point = ScalePoint(Comparison("first sync"), Comparison("steady state"), Comparison("steady state, reused"))
            run_pass(engine, counting, copies, point.first)
            analyze(engine, enabled=options.analyze)
            run_pass(engine, counting, copies, point.steady)
            assert point.reused is not None
            run_pass(engine, counting, copies, point.reused)
            points.append(point)

        # issue 23: the decide step of the largest scaling subscription alone (its Python CPU, no database)
        decide_cpu = decide.measure(engine, scale[-1][0]) if scale else None

        # issue 15: a credit_only subscription per size, at least one counted and one timed copy each
        settle()  # bench/credits.py times its own passes: start them without the scaling syncs' garbage
        credit_sizes = credits.measure(
            engine,
            counting,
            options.credit_months,
            max(2, options.subscriptions // 5),
            options.repeats,
            analyzed=options.analyze,
        )
    finally:
        counting.close()
        engine.dispose()
    header = [
        f"subsync benchmark — Postgres {version} at {where}, Python {platform.python_version()}, {_cpus()} CPU(s)",
        f"N={options.subscriptions} subscriptions of P={options.phases} phases x I={options.items} items x "
        f"M={options.months} months per phase ({first.lines} lines each); {options.repeats} steady/edit pass(es); "
        f"K={options.workers} worker process(es) x {options.threads} thread(s)",
        f"machine: {load} at the start (8 sessions share it: compare ratios, counts and CPU times, not wall times)",
        "planner statistics: "
        + ("ANALYZE after seeding and after each first-sync pass" if options.analyze else "left to autovacuum")
        + f"; {options.subscriptions} default and one {background_days}-day subscription"
        + (f" and {max(2, options.subscriptions // 5)} credit_only ones" if options.credit_months else "")
        + " synced beforehand, never measured (bench.seeding.seed_background, bench.credits.seed_background)",
    ]
    results = Results(header, [first, steady, edit], e2e, e2e_error, points, credits=credit_sizes)
    results.decide = decide_cpu
    results.reused = reused
    results.startup = measured_startup
    results.elapsed = time.perf_counter() - began
    return results


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Database: DATABASE_URL (a scratch database is created on that server and dropped), else the "
        "embedded Postgres. Broker: REDIS_URL, else the embedded Redis. Defaults finish in under 5 minutes "
        "on 2 cores; --quick in under a minute.",
    )
    d = Options()
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer runs: finishes in under a minute")
    parser.add_argument(
        "-n", "--subscriptions", type=int, help=f"N customers with one subscription (default {d.subscriptions})"
    )
    parser.add_argument("-p", "--phases", type=int, help=f"P phases per subscription (default {d.phases})")
    parser.add_argument("-i", "--items", type=int, help=f"I items per phase (default {d.items})")
    parser.add_argument("-m", "--months", type=int, help=f"M months of history per phase (default {d.months})")
    parser.add_argument(
        "-k", "--workers", type=int, help=f"K worker processes end to end, 0 skips (default {d.workers})"
    )
    parser.add_argument("--threads", type=int, help=f"threads per worker process (default {d.threads})")
    parser.add_argument(
        "-r", "--repeats", type=int, help=f"steady-state/edit passes and end-to-end rounds (default {d.repeats})"
    )
    parser.add_argument(
        "--scale-days",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        help="days of history of the scaling subscription, ~10 lines per day (default 1,10,100,1000)",
    )
    parser.add_argument(
        "--scale-repeats",
        type=int,
        help=f"timed runs per scaling size of 1,000 lines or more; smaller sizes get at least 10 (default {d.scale_repeats})",
    )
    parser.add_argument(
        "--credit-months",
        type=lambda s: tuple(int(v) for v in s.split(",") if v),
        help="months of history of the credit_only subscription, one size per value, ~3 charges per month; "
        "an empty value skips the credits section (default 12,24)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its name is printed)")
    parser.add_argument(
        "--startup",
        action="store_true",
        help="only the start-up section: median wall time of `subsync --help` and read commands (about a minute)",
    )
    parser.add_argument(
        "--startup-repeats",
        type=int,
        help=f"runs of each command in the start-up section, 0 skips it (default {d.startup_repeats})",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="only the scale section (issue 25), with options of its own: python -m bench --scale --help",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON (name: number)")
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="A/B: run this tree and git revision REV interleaved (same options, same servers) and print each "
        "figure's ratio current/REV with its spread over the rounds",
    )
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="do not ANALYZE after seeding and after each first-sync pass (planner statistics left to autovacuum)",
    )
    parser.add_argument("--rounds", type=int, help=f"interleaved rounds per side of --compare (default {d.rounds})")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else d
    values = {
        name: getattr(args, name)
        for name in (
            "subscriptions",
            "phases",
            "items",
            "months",
            "workers",
            "threads",
            "repeats",
            "scale_days",
            "scale_repeats",
            "startup_repeats",
            "credit_months",
            "rounds",
            "compare",
        )
        if getattr(args, name) is not None
    }
    options = dataclasses.replace(
        base, **values, analyze=args.analyze, keep=args.keep, startup_only=args.startup, json_path=args.json
    )
    if options.subscriptions < 2 or options.phases < 1 or options.items < 1 or options.months < 1:
        parser.error("need N >= 2 and P, I, M >= 1")
    if options.repeats < 1 or options.scale_repeats < 1 or options.workers < 0 or options.threads < 1:
        parser.error("repeats and threads must be >= 1, workers >= 0")
    if options.startup_repeats < 0 or (options.startup_only and options.startup_repeats < 1):
        parser.error("--startup-repeats must be >= 0 (>= 1 with --startup)")
    if options.rounds < 1:
        parser.error("--rounds must be >= 1")
    if options.compare is not None and (options.keep or options.json_path):
        parser.error("--compare runs its own benchmarks: --keep and --json do not apply to it")
    if any(m < 1 or m > 120 for m in options.credit_months):
        parser.error("--credit-months values must be 1..120")
    if any(d < 1 or d > 1000 for d in options.scale_days):
        parser.error("--scale-days values must be 1..1000 (at most 1001 periods per item version and sync)")
    return options


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--scale" in args:  # issue 25: a section with options of its own (bench.scale_cli)
        from bench import scale_cli

        scale_cli.main(args)
        return
    options = parse_args(argv)
    if options.compare is not None:
        from bench.compare import compare

        print(compare(options.compare, sys.argv[1:] if argv is None else list(argv), options.rounds))
        return
    configure_logging("console", level=logging.WARNING)  # the sync's info lines would drown the report
    as_a_worker_process()  # the collector as a worker process sets it (bench.measure.as_a_worker_process)
    results = run(options)
    if options.json_path:
        import json

        from bench.figures import collect

        with open(options.json_path, "w") as f:
            json.dump(collect(results), f, indent=1)
    print(render(results))
    sys.stdout.flush()
