"""The collector of a worker process (worker.infra.gc_policy), measured where it acts: in a process holding only the
worker's modules and engine, as a booted `dramatiq` worker process does.

    python -m bench.gc_worker [--days 1000] [--rounds 6] [--syncs 5]

Seeds a scratch database with one daily subscription (~10 lines a day) and syncs it once, then, for each round,
starts one new process per mode — `none` (CPython's collector as it comes), `freeze` (only `gc.freeze()` after
start-up) and `policy` (`apply_gc_policy`) — in an order that rotates by round. Each process imports what a worker
imports, then times `--syncs` steady-state syncs decided in full (the recorded decision cleared before each,
docs/sync.md §8.6). Prints each mode's median wall and CPU time per round and over the rounds.

`python -m bench` runs its syncs inside the benchmark's own process, which `bench.measure.as_a_worker_process`
freezes for both the syncs and the floor: there the policy's freezing is already in both sides of an A/B.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime

MODES = ("none", "freeze", "policy")


def _child(url: str, subscription_id: str, as_of: str, mode: str, syncs: int) -> None:
    """One worker-like process: the worker's imports, its engine, the mode's collector, then the timed syncs."""
    import gc

    import dramatiq  # noqa: F401  (a worker process holds Dramatiq and the actors' modules)
    from sqlalchemy import text

    import worker.queue.actors  # noqa: F401
    from bench.measure import forget_decisions
    from bench.seeding import REAL
    from worker import bootstrap
    from worker.app.sync import sync_subscription
    from worker.config import load_settings

    engine = bootstrap.engine(load_settings(), url)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    if mode == "freeze":
        gc.freeze()
    elif mode == "policy":
        from worker.infra.gc_policy import apply_gc_policy

        apply_gc_policy()
    walls: list[float] = []
    cpus: list[float] = []
    for n in range(syncs + 1):
        forget_decisions(engine)  # decided in full: no recorded decision
        began, cpu = time.perf_counter(), time.process_time()
        sync_subscription(engine, REAL, subscription_id, as_of=datetime.fromisoformat(as_of))
        if n:  # the first warms the caches
            walls.append(time.perf_counter() - began)
            cpus.append(time.process_time() - cpu)
    print(f"{statistics.median(walls) * 1e3:.2f} {statistics.median(cpus) * 1e3:.2f}")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gc_worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=1000, help="days of history, ~10 lines a day (default 1000)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, one process per mode each (default 6)")
    parser.add_argument("--syncs", type=int, default=5, help="timed syncs per process (default 5)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, subscription_id, as_of, mode = args.child
        _child(url, subscription_id, as_of, mode, args.syncs)
        return

    from bench import seeding
    from bench.database import scratch_database, server_url, timing_engine
    from bench.measure import analyze
    from worker.app.sync import sync_subscription

    with scratch_database(server_url()) as url:
        engine = timing_engine(url)
        seeded = seeding.seed_scale(engine, args.days, 1)[0]
        sync_subscription(engine, seeding.REAL, seeded.subscription_id, as_of=seeded.as_of)
        analyze(engine)
        engine.dispose()
        load = os.getloadavg()
        print(f"{args.days}-day subscription, {args.rounds} round(s); load average {load[0]:.2f} at the start")
        figures: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
        for r in range(args.rounds):
            order = MODES[r % 3 :] + MODES[: r % 3]
            for mode in order:
                argv = [sys.executable, "-m", "bench.gc_worker", "--syncs", str(args.syncs), "--child", url]
                argv += [seeded.subscription_id, seeded.as_of.isoformat(), mode]
                out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split()
                figures[mode].append((float(out[0]), float(out[1])))
            print(
                f"round {r + 1}: "
                + ", ".join(f"{m} {figures[m][-1][0]:.0f} ms (CPU {figures[m][-1][1]:.0f})" for m in MODES)
            )
        print(f"median of rounds (load average {os.getloadavg()[0]:.2f} at the end):")
        for mode in MODES:
            walls = [w for w, _ in figures[mode]]
            cpus = [c for _, c in figures[mode]]
            print(f"  {mode:7s} wall {statistics.median(walls):7.1f} ms   CPU {statistics.median(cpus):7.1f} ms")


if __name__ == "__main__":
    main()
