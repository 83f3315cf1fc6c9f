"""Profile the sync, or the worker's per-message path, with pyinstrument or py-spy (issue 23).

    python -m bench.profile first --days 1000            # the first sync of a ~10,000-line subscription
    python -m bench.profile steady --days 1000 -r 20 --svg docs/img/steady-10k.svg
    python -m bench.profile credit-steady --months 24 -r 200 --svg docs/img/credit-steady.svg
    python -m bench.profile credit-steady --months 24 -r 300 --no-reuse   # decided in full (docs/sync.md §8.6)
    python -m bench.profile worker -n 200 --seconds 20 --svg docs/img/worker-message.svg

Seeds a scratch database like `python -m bench` does, then profiles: `first` / `steady` (the daily
subscription: the first sync on fresh copies, the steady-state sync on one synced copy), `credit-first` /
`credit-steady` (the credit_only subscription of `bench.credits`, 3 charges a month), or `worker`: a real
`subsync worker` (1 process x 2 threads) draining steady-state `subscription.updated` events, sampled by
py-spy attached to the worker process for `--seconds` (the per-message path: Dramatiq, middleware,
logging and the sync). By default pyinstrument (a dev dependency) prints the call tree (`--html FILE`:
its HTML report); `--svg FILE` writes a py-spy flame graph instead (`pip install py-spy`; only the
profiled loop is sampled, not the seeding). py-spy is not a dependency of the project.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from bench import credits, seeding
from bench.database import scratch_database, server_url, timing_engine
from bench.measure import analyze, as_a_worker_process
from worker.app.sync import sync_subscription
from worker.infra.logging import configure_logging


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(os.path.join(os.path.dirname(sys.executable), "py-spy"))
    if not os.path.exists(found):
        raise SystemExit("--svg needs py-spy: pip install py-spy")
    return found


@contextmanager
def py_spy(pid: int, svg: str, *, subprocesses: bool = False, seconds: int | None = None) -> Any:
    """py-spy sampling `pid` at 250 Hz (`--gil`: only threads running Python, i.e. CPU) while the block runs, writing a flame graph to `svg`."""
    argv = [_py_spy(), "record", "--gil", "--pid", str(pid), "--rate", "250", "--output", svg]
    argv += ["--format", "raw" if svg.endswith(".txt") else "flamegraph"]  # .txt: collapsed stacks
    argv += ["--subprocesses"] if subprocesses else []
    argv += ["--duration", str(seconds)] if seconds else []
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches before the profiled work starts (a tool, not a test)
    try:
        yield spy
    finally:
        if seconds is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes the flame graph on SIGINT
        _, err = spy.communicate(timeout=120)
        print(err.decode(errors="replace").strip().splitlines()[-1:], file=sys.stderr)


def _profile_syncs(args: argparse.Namespace) -> None:
    with scratch_database(server_url()) as url:
        engine = timing_engine(url)
        if args.scenario.startswith("credit"):
            credits.seed_background(engine, 40)  # the charge tables lived in, then analyzed, as `python -m bench` does
            copies = credits.seed(engine, args.months, args.repeats if args.scenario == "credit-first" else 1)
            analyze(engine)
        else:
            copies = seeding.seed_scale(engine, args.days, args.repeats if args.scenario == "first" else 1)
        if args.scenario.endswith("steady"):
            sync_subscription(engine, seeding.REAL, copies[0].subscription_id, as_of=copies[0].as_of)
            copies = copies * args.repeats

        def run() -> None:
            for c in copies:
                sync_subscription(engine, seeding.REAL, c.subscription_id, as_of=c.as_of, reuse=args.reuse)

        _sampled(args, run)
        engine.dispose()


def _sampled(args: argparse.Namespace, run: Callable[[], None]) -> None:
    if args.svg:
        with py_spy(os.getpid(), args.svg):
            run()
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    with profiler:
        run()
    if args.html:
        with open(args.html, "w") as f:
            f.write(profiler.output_html())
    else:
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def _profile_worker(args: argparse.Namespace) -> None:
    """A real `subsync worker` draining steady-state events for `--seconds`, sampled by py-spy."""
    from bench.e2e import _Group, _worker_argv  # the benchmark's own worker runner

    if not args.svg:
        raise SystemExit("the worker scenario samples another process: give --svg FILE (py-spy)")
    from worker.bootstrap import redis_url
    from worker.config import load_settings

    with scratch_database(server_url()) as url:
        engine = timing_engine(url)
        subs = seeding.seed_mixed(engine, args.subscriptions, seeding.Shape(2, 4, 6))
        for s in subs:
            sync_subscription(engine, seeding.REAL, s.subscription_id, as_of=s.as_of)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SUBSYNC_INVOICE_AFTER_SYNC": "false",
            "SUBSYNC_LOG_FORMAT": "json",
            "SUBSYNC_LOG_LEVEL": "INFO",
            "SUBSYNC_METRICS_PORT": "0",
        }
        ids = [s.subscription_id for s in subs]
        group = _Group("profile", _worker_argv(1, 2), env, seeding.REAL, redis_url(load_settings()), ids)
        try:
            group.round(engine, 0, subs, 120.0)  # warm-up
            n = 1
            with py_spy(group.process.pid, args.svg, subprocesses=True, seconds=args.seconds) as spy:
                while spy.poll() is None:
                    group.round(engine, n, subs, 120.0)
                    n += 1
            print(f"{n - 1} round(s) of {len(subs)} messages sampled", file=sys.stderr)
        finally:
            group.stop()
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("first", "steady", "credit-first", "credit-steady", "worker"))
    parser.add_argument("--days", type=int, default=1000, help="days of history, ~10 lines per day (default 1000)")
    parser.add_argument("--months", type=int, default=24, help="credit scenarios: months of history (default 24)")
    parser.add_argument("-r", "--repeats", type=int, default=3, help="profiled syncs (default 3)")
    parser.add_argument("-n", "--subscriptions", type=int, default=200, help="worker: subscriptions (default 200)")
    parser.add_argument("--seconds", type=int, default=20, help="worker: seconds sampled (default 20)")
    parser.add_argument(
        "--no-reuse", dest="reuse", action="store_false", help="decide every sync in full (docs/sync.md §8.6)"
    )
    parser.add_argument("--html", help="write pyinstrument's HTML report to this file")
    parser.add_argument("--svg", help="write a py-spy flame graph (SVG) to this file instead")
    args = parser.parse_args()
    configure_logging("console", level=logging.WARNING)
    as_a_worker_process()  # the collector as in a worker process (bench.measure.as_a_worker_process)
    (_profile_worker if args.scenario == "worker" else _profile_syncs)(args)


if __name__ == "__main__":
    main()
