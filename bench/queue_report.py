"""Printing issue 23's part of the benchmark: the workers against the queue floor, and the targets of issue 23.

Every target is a ratio measured in this run (or a count), so it reads the same on a busy machine as on
a quiet one; the machine's load average is printed in the header (`machine_load`).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bench.e2e import Drain, EndToEnd
from bench.measure import Comparison, percentile

if TYPE_CHECKING:
    from bench.report import Results

QUEUE_MIN_THROUGHPUT_RATIO = 0.8  # workers' syncs/s over the queue floor's
QUEUE_MAX_CPU_RATIO = 1.5  # workers' CPU per message over the queue floor's
STEADY_RATIO = 1.3
EDIT_RATIO = 1.5
FIRST_RATIO = 1.3
LARGE_LINES = 10_000
LARGE_STEADY_RATIO = 1.5
LARGE_FIRST_RATIO = 1.2
CREDIT_RATIOS = (("first sync", 1.5), ("steady-state sync", 1.5), ("sync after an edit", 2.0))
REUSED_CREDIT = ("steady-state sync, reused", 1.5)  # the same steady syncs again (docs/sync.md §8.6)
EXTRA_ROUND_TRIPS = 2  # round trips per sync above the floor's
READ_COMMANDS = ("subsync lines --subscription …", "subsync subscriptions get …")


def machine_load() -> str:
    """The 1, 5 and 15-minute load averages and the CPUs they share."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPU(s)"


def _check(ok: bool, text: str) -> str:
    return f"  [{'PASS' if ok else 'FAIL'}] {text}"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


def drain_figures(drain: Drain) -> tuple[float, float, float, float]:
    """syncs/s, message median and p95 (seconds), CPU seconds per message: medians over the rounds."""
    median = _median(drain.message_ms) / 1000
    p95 = percentile(drain.message_ms, 95) / 1000 if drain.message_ms else math.nan
    return _median(drain.per_round), median, p95, _median(drain.cpu_per_message)


def render_queue_floor(e2e: EndToEnd) -> list[str]:
    """The workers next to the queue floor, with the ratios issue 23 targets."""
    if e2e.queue_floor is None:
        return []
    rows = []
    for label, drain in (("subsync worker", e2e.workers), ("queue floor (bench/queue_floor.py)", e2e.queue_floor)):
        rate, median, p95, cpu = drain_figures(drain)
        rows.append([label, f"{rate:.0f}", _ms(median), _ms(p95), _ms(cpu)])
    w, f = drain_figures(e2e.workers), drain_figures(e2e.queue_floor)
    ratios = [w[i] / f[i] if f[i] else math.nan for i in range(4)]
    rows.append(["  workers / queue floor", *(f"{r:.2f}x" for r in ratios)])
    from bench.report import table

    head = [
        f"end to end vs the queue floor ({e2e.processes}x{e2e.threads}, {len(e2e.workers.per_round)} round(s))",
        "syncs/s",
        "message median ms",
        "message p95 ms",
        "CPU ms/message",
    ]
    per_round = ", ".join(
        f"{a:.0f}/{b:.0f}" for a, b in zip(e2e.workers.per_round, e2e.queue_floor.per_round, strict=False)
    )
    return [
        "End to end against the queue floor (issue 23: same broker, middleware, processes and threads; rounds "
        "alternate; CPU = the process tree's user+system time over the messages):",
        *table(head, rows),
        f"  (per round, syncs/s workers/queue floor: {per_round})",
    ]


def _ratio(c: Comparison) -> float:
    return c.real.median / c.floor.median if c.floor.seconds else math.nan


def _round_trip_checks(results: Results) -> list[str]:
    """Round trips per sync within `EXTRA_ROUND_TRIPS` of the floor's, in every scenario."""
    named: list[tuple[str, Comparison]] = [(c.name, c) for c in results.scenarios]
    named += [(results.reused.name, results.reused)] if results.reused is not None else []
    named += [
        (f"{p.first.lines} lines, {c.name}", c)
        for p in results.scaling
        for c in (p.first, p.steady, p.reused)
        if c is not None
    ]
    named += [(f"{s.first.lines} charges, {c.name}", c) for s in results.credits for c in (*s.scenarios, s.reused)]
    excess = {
        name: c.real.counts.round_trips - c.floor.counts.round_trips
        for name, c in named
        if c.real.counts is not None and c.floor.counts is not None
    }
    if not excess:
        return []
    worst = max(excess, key=lambda k: excess[k])
    return [
        _check(
            excess[worst] <= EXTRA_ROUND_TRIPS,
            f"round trips per sync <= floor + {EXTRA_ROUND_TRIPS} in all {len(excess)} scenarios "
            f"(most above the floor: {worst}, +{excess[worst]})",
        )
    ]


def render_targets(results: Results) -> list[str]:
    """The targets of issue 23, each a ratio or a count measured in this run."""
    out = [f"Targets of issue 23 (one run; {machine_load()} now):"]
    e2e = results.end_to_end
    if e2e is not None and e2e.queue_floor is not None and e2e.queue_floor.per_round:
        w, f = drain_figures(e2e.workers), drain_figures(e2e.queue_floor)
        if not f[3]:  # a tiny run can take less CPU than one clock tick: no ratio to check
            f = (*f[:3], math.nan)
        out.append(
            _check(
                w[0] / f[0] >= QUEUE_MIN_THROUGHPUT_RATIO,
                f"end to end {e2e.processes}x{e2e.threads} workers {w[0] / f[0]:.2f}x the queue floor's throughput "
                f">= {QUEUE_MIN_THROUGHPUT_RATIO}x",
            )
        )
        out.append(
            _check(
                w[3] / f[3] <= QUEUE_MAX_CPU_RATIO,
                f"worker CPU per message {w[3] * 1000:.2f} ms, {w[3] / f[3]:.2f}x the queue floor's "
                f"{f[3] * 1000:.2f} ms <= {QUEUE_MAX_CPU_RATIO}x",
            )
        )
    else:
        out.append(_check(False, f"queue floor not measured ({results.end_to_end_error or 'end to end disabled'})"))
    first, steady, edit = results.scenarios
    for name, c, limit in (
        ("steady-state sync", steady, STEADY_RATIO),
        ("sync after an edit", edit, EDIT_RATIO),
        (f"first sync ({first.lines} lines)", first, FIRST_RATIO),
    ):
        out.append(_check(_ratio(c) <= limit, f"{name} {_ratio(c):.2f}x the floor <= {limit}x"))
    if results.reused is not None:
        c = results.reused
        out.append(_check(_ratio(c) <= STEADY_RATIO, f"steady-state sync, reused {_ratio(c):.2f}x <= {STEADY_RATIO}x"))
    large = [p for p in results.scaling if p.first.lines >= LARGE_LINES]
    if large:
        p = large[-1]
        for name, got, limit in (
            ("steady", p.steady, LARGE_STEADY_RATIO),
            ("steady, reused", p.reused, LARGE_STEADY_RATIO),
            ("first", p.first, LARGE_FIRST_RATIO),
        ):
            if got is not None:
                out.append(
                    _check(
                        _ratio(got) <= limit, f"{p.first.lines} lines, {name} {_ratio(got):.2f}x the floor <= {limit}x"
                    )
                )
    for size in results.credits:
        for (name, limit), c in (*zip(CREDIT_RATIOS, size.scenarios, strict=True), (REUSED_CREDIT, size.reused)):
            out.append(
                _check(
                    _ratio(c) <= limit, f"credit_only {size.first.lines} charges, {name} {_ratio(c):.2f}x <= {limit}x"
                )
            )
    out += _round_trip_checks(results)
    if results.startup is not None:
        for run in results.startup.runs:
            if run.label in READ_COMMANDS and not run.failed:
                out.append(
                    _check(
                        run.median <= 0.5,
                        f"{run.label} {run.median * 1000:.0f} ms wall (CPU {run.cpu_median * 1000:.0f} ms) <= 500 ms"
                        " (on a quiet machine)",
                    )
                )
    return out
