"""Start-up of the `subsync` command (issue 14): the median wall time of several runs of `--help`, `--version`
and read commands on a migrated database, beside a bare `python -c pass` (the interpreter's own floor).

Each run is a new process, as an operator's shell starts it; the read commands run against the
benchmark's scratch database (one demo subscription applied first), so they connect and query. A full run
measures this section first, before it seeds and syncs anything: measured last, the read commands ran while
Postgres was still busy with the heavy sections' writes (docs/performance.md "Read commands, third pass").
The machine's load average at the start of the section is printed with it."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.queue_report import machine_load

HELP_MAX_SECONDS = 0.25
READ_MAX_SECONDS = 0.5


@dataclass(slots=True)
class Run:
    label: str
    argv: list[str]
    target: float | None  # seconds; None: a reference, not a target
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system seconds of the process
    failed: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")


@dataclass(slots=True)
class StartUp:
    runs: list[Run]
    repeats: int
    load: str = ""  # the machine's load average when the section started (`machine_load`)


def _subsync() -> list[str]:
    script = Path(sys.executable).with_name("subsync")
    return [str(script)] if script.exists() else [sys.executable, "-m", "worker"]


def seed(database_url: str) -> None:
    """The demo's customer and subscription in the database at `database_url` (for the read commands)."""
    from worker.cli.demo import seed as seed_demo  # the demo's fixed ids
    from worker.infra.clock import utcnow
    from worker.store.db import make_engine

    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        seed_demo(engine, utcnow())
    finally:
        engine.dispose()


def plan() -> list[Run]:
    cli = _subsync()
    read = ["--namespace", "demo", "--format", "json"]
    return [
        Run("python -c pass", [sys.executable, "-c", "pass"], None),
        Run("subsync --help", [*cli, "--help"], HELP_MAX_SECONDS),
        Run("subsync --version", [*cli, "--version"], HELP_MAX_SECONDS),
        Run("subsync lines --help", [*cli, "lines", "--help"], HELP_MAX_SECONDS),
        Run("subsync subscriptions apply --help", [*cli, "subscriptions", "apply", "--help"], HELP_MAX_SECONDS),
        Run(
            "subsync lines --subscription …",
            [*cli, "lines", *read, "--subscription", "demo-subscription"],
            READ_MAX_SECONDS,
        ),
        Run(
            "subsync subscriptions get …",
            [*cli, "subscriptions", "get", *read, "--id", "demo-subscription"],
            READ_MAX_SECONDS,
        ),
    ]


def measure(database_url: str, *, repeats: int = 7, runs: Sequence[Run] | None = None) -> StartUp:
    """Run each command `repeats` times (after one unmeasured warm-up round) and keep the wall and CPU times.

    The commands take turns (round after round, each command once per round), so a burst of someone
    else's load on the shared machine costs every command a run or two instead of all of one command's
    runs (consecutive runs of each command put a 3-second burst into one command's median)."""
    env = {**os.environ, "DATABASE_URL": database_url, "SUBSYNC_LOG_FORMAT": "json"}
    env.pop("SUBSYNC_LOG_LEVEL", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: the warm-up run leaves the bytecode cached
    chosen = list(runs) if runs is not None else plan()
    load = machine_load()
    for attempt in range(repeats + 1):
        for run in chosen:
            if run.failed:
                continue
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            began = time.perf_counter()
            done = subprocess.run(run.argv, env=env, capture_output=True, check=False)
            elapsed = time.perf_counter() - began
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                run.failed = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            elif attempt:  # the first round warms the OS caches and writes .pyc files
                run.seconds.append(elapsed)
                run.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return StartUp(chosen, repeats, load)


def render(startup: StartUp) -> list[str]:
    floor = startup.runs[0].median if startup.runs else float("nan")
    out = [
        f"Start-up (median of {startup.repeats} runs, each a new process; bare interpreter {floor * 1000:.0f} ms):",
        "  (wall time, min, and CPU time: on a busy machine compare the CPU figures)",
    ]
    if startup.load:
        out.append(f"  machine: {startup.load} at the start of this section")
    width = max(len(r.label) for r in startup.runs)
    for run in startup.runs:
        if run.failed:
            out.append(f"  [FAIL] {run.label:<{width}}  failed: {run.failed}")
            continue
        figures = f"{run.median * 1000:6.0f} ms (min {min(run.seconds) * 1000:4.0f}, cpu {run.cpu_median * 1000:4.0f})"
        if run.target is None:
            out.append(f"         {run.label:<{width}}  {figures}")
        else:
            verdict = "PASS" if run.median <= run.target else "FAIL"
            out.append(f"  [{verdict}] {run.label:<{width}}  {figures}  target ≤ {run.target * 1000:.0f} ms")
    return out
