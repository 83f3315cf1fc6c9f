"""The options of `python -m bench --scale` (issue 25; `bench.scale`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bench.scale import ScaleOptions, run
from bench.scale_report import render
from worker.infra.logging import configure_logging


def _sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {value!r}") from None
    if not sizes or any(v < 1 for v in sizes):
        raise argparse.ArgumentTypeError(f"expected numbers >= 1, got {value!r}")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> ScaleOptions:
    d = ScaleOptions()
    parser = argparse.ArgumentParser(
        prog="python -m bench --scale",
        description="How the cost grows with subscriptions, customers and workers (issue 25): seeds N "
        "subscriptions by SQL in a scratch database, then measures the reconcile_due fan-out, the hot plans, "
        "hot customers and worker processes, with PASS/FAIL lines. Defaults take a few minutes on 2 cores.",
        epilog="Database: DATABASE_URL (a scratch database is created on that server and dropped), else the "
        "embedded Postgres. Broker: REDIS_URL, else the embedded Redis (a private namespace, deleted afterwards).",
    )
    parser.add_argument("--scale", action="store_true", help="this section (required)")
    parser.add_argument(
        "--subscriptions", type=int, default=d.subscriptions, help=f"N subscriptions (default {d.subscriptions:,})"
    )
    parser.add_argument(
        "--customers", type=int, default=d.customers, help=f"C customers they belong to (default {d.customers:,})"
    )
    parser.add_argument("--due", type=int, default=d.due, help=f"D of them due for reconcile_due (default {d.due:,})")
    parser.add_argument(
        "--never-synced",
        type=int,
        default=d.never_synced,
        help=f"of which the last have no sync state, due as never synced (default {d.never_synced:,})",
    )
    parser.add_argument(
        "--hot", type=_sizes, default=d.hot, help="subscriptions of each hot customer (default 1,10,100,1000)"
    )
    parser.add_argument(
        "--backlog", type=int, default=d.backlog, help=f"B events the worker pools drain (default {d.backlog:,})"
    )
    parser.add_argument(
        "--processes", type=_sizes, default=d.processes, help="worker process counts to compare (default 1,2,4)"
    )
    parser.add_argument(
        "--threads", type=int, default=d.threads, help=f"threads per worker process (default {d.threads})"
    )
    parser.add_argument(
        "--sync-repeats",
        type=int,
        default=d.sync_repeats,
        help=f"timed syncs of the probe per size (default {d.sync_repeats})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its name is printed)")
    args = parser.parse_args(argv)
    if args.subscriptions < 20 or args.customers < 1 or args.customers > args.subscriptions:
        parser.error("--subscriptions must be >= 20 and --customers between 1 and --subscriptions")
    if not 0 <= args.due <= args.subscriptions:
        parser.error("--due must be between 0 and --subscriptions")
    if not 0 <= args.never_synced <= args.subscriptions - args.due:
        parser.error("--never-synced must be between 0 and --subscriptions minus --due")
    if args.backlog < 1 or args.threads < 1 or args.sync_repeats < 1:
        parser.error("--backlog, --threads and --sync-repeats must be >= 1")
    return ScaleOptions(
        subscriptions=args.subscriptions,
        customers=args.customers,
        due=args.due,
        never_synced=args.never_synced,
        hot=args.hot,
        backlog=args.backlog,
        processes=args.processes,
        threads=args.threads,
        sync_repeats=args.sync_repeats,
        keep=args.keep,
    )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    configure_logging("console", level=logging.WARNING)
    print(render(run(options)))
    sys.stdout.flush()
