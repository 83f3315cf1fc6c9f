"""The benchmark's figures as one flat mapping (name → number), for `--json` and `--compare`.

Times are in milliseconds, ratios are to the floor (or the queue floor), counts are per sync. The names
are stable across revisions: `--compare` pairs them by name.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench.queue_report import drain_figures

if TYPE_CHECKING:
    from bench.measure import Comparison
    from bench.report import Results


def _scenario(out: dict[str, float], prefix: str, c: Comparison) -> None:
    out[f"{prefix} ms"] = c.real.median * 1000
    if c.real.cpu:  # the client's CPU time: robust on a busy machine (the Python work of the sync)
        out[f"{prefix} CPU ms"] = c.real.cpu_median * 1000
    if c.floor.seconds:
        out[f"{prefix} x floor"] = c.real.median / c.floor.median
    if c.real.counts is not None:
        out[f"{prefix} statements"] = c.real.counts.statements
        out[f"{prefix} round trips"] = c.real.counts.round_trips


def collect(results: Results) -> dict[str, float]:
    out: dict[str, float] = {}
    e2e = results.end_to_end
    if e2e is not None:
        rate, median, p95, cpu = drain_figures(e2e.workers)
        out.update({"e2e syncs/s": rate, "e2e message median ms": median * 1000, "e2e message p95 ms": p95 * 1000})
        out["e2e CPU ms/message"] = cpu * 1000
        if e2e.queue_floor is not None:
            f_rate, f_median, _, f_cpu = drain_figures(e2e.queue_floor)
            out.update({"queue floor syncs/s": f_rate, "queue floor message median ms": f_median * 1000})
            out["queue floor CPU ms/message"] = f_cpu * 1000
            out["e2e syncs/s x queue floor"] = rate / f_rate if f_rate else math.nan
            out["e2e CPU/message x queue floor"] = cpu / f_cpu if f_cpu else math.nan
    for c in [*results.scenarios, *([results.reused] if results.reused is not None else [])]:
        _scenario(out, c.name, c)
    for p in results.scaling:
        _scenario(out, f"{p.first.lines} lines first", p.first)
        _scenario(out, f"{p.steady.lines} lines steady", p.steady)
        if p.reused is not None:
            _scenario(out, f"{p.reused.lines} lines steady reused", p.reused)
    if results.decide is not None:
        out[f"{results.decide.lines} lines decide CPU min ms"] = results.decide.cpu_min * 1000
        out[f"{results.decide.lines} lines decide CPU median ms"] = results.decide.cpu_median * 1000
    for size in results.credits:
        for c in [*size.scenarios, size.reused]:
            _scenario(out, f"credit {size.first.lines} charges {c.name}", c)
    if results.startup is not None:
        for run in results.startup.runs:
            if run.seconds:
                out[f"{run.label} wall ms"] = run.median * 1000
                out[f"{run.label} CPU ms"] = run.cpu_median * 1000
    return {k: float(v) for k, v in out.items() if not math.isnan(float(v))}
