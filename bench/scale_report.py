"""The text report of `python -m bench --scale` (issue 25): every figure, then the PASS/FAIL lines."""

from __future__ import annotations

import os
import platform
import statistics

from bench.scale import FANOUT_TARGET, SYNC_RATIO_LIMIT, ScaleResults
from bench.scale_workers import Drained


def _n(value: float) -> str:
    return f"{value:,.0f}"


def verdicts(r: ScaleResults) -> list[tuple[bool, str]]:
    """(passed, line) of each target of issue 25."""
    out: list[tuple[bool, str]] = []
    if r.fanout is not None:
        rate = r.fanout.enqueued_per_second
        out.append(
            (
                rate >= FANOUT_TARGET,
                f"due scan + enqueue {_n(rate)} subscriptions/s at {_n(r.options.subscriptions)} subscriptions "
                f"(target >= {_n(FANOUT_TARGET)}/s)",
            )
        )
    if r.plans:
        bad = [p for p in r.plans if not p.ok]
        shown = "; ".join(f"{p.label}: {p.verdict.describe()}" for p in bad)
        out.append(
            (
                not bad,
                f"every hot plan uses an index ({len(r.plans) - len(bad)}/{len(r.plans)}){': ' + shown if bad else ''}",
            )
        )
    if r.small is not None and r.large is not None:
        ratio = r.large.median_ms / r.small.median_ms if r.small.median_ms else float("inf")
        out.append(
            (
                ratio <= SYNC_RATIO_LIMIT,
                f"sync of one subscription {r.large.median_ms:.2f} ms next to {_n(r.large.others)} others vs "
                f"{r.small.median_ms:.2f} ms next to {r.small.others}: {ratio:.2f}x (limit {SYNC_RATIO_LIMIT}x)",
            )
        )
    return out


def render(r: ScaleResults) -> str:
    o = r.options
    lines = [
        f"subsync scale — Python {platform.python_version()}, {os.cpu_count()} CPU(s), database {r.where}",
        f"N={_n(o.subscriptions)} subscriptions, C={_n(o.customers)} customers, D={_n(o.due)} due, {_n(o.never_synced)} never synced, "
        f"hot customers {', '.join(map(str, o.hot))}, backlog B={_n(o.backlog)}, "
        f"processes {', '.join(map(str, o.processes))} x {o.threads} threads",
        "load average (1/5/15 min): " + "; ".join(f"{w} {a:.2f}/{b:.2f}/{c:.2f}" for w, (a, b, c) in r.load),
        "",
        f"seeding by generate_series: {r.seed_seconds:.1f} s; rows: "
        + ", ".join(f"{t} {_n(n)}" for t, n in sorted(r.rows.items(), key=lambda kv: -kv[1]) if n),
    ]
    if r.small and r.large:
        for probe in (r.small, r.large):
            lines.append(
                f"probe steady-state sync next to {_n(probe.others)} subscriptions: median {probe.median_ms:.2f} ms, "
                f"p90 {probe.p90_ms:.2f} ms, {probe.statements} statements"
            )
    if r.plans:
        lines += ["", "hot statements (captured from the real code; EXPLAIN ANALYZE, BUFFERS):"]
        for p in r.plans:
            lines.append(
                f"  {'ok ' if p.ok else 'BAD'} {p.label:<24} {p.execution_ms:8.2f} ms {p.rows:>6} rows "
                f"{p.buffers:>6} buffers  {p.verdict.describe()}  [{', '.join(p.verdict.tables)}]"
            )
    if r.fanout:
        f = r.fanout
        lines += [
            "",
            f"reconcile_due fan-out: {_n(f.found)} due found in {f.scan_seconds:.2f} s ({_n(f.found_per_second)}/s, "
            f"scan alone); {_n(f.enqueued)} enqueued in {f.enqueue_seconds:.2f} s ({_n(f.enqueued_per_second)}/s); "
            f"100,000 would take {100_000 / f.enqueued_per_second if f.enqueued_per_second else 0:.1f} s",
            f"Redis: {_n(f.redis_bytes_per_message)} bytes per queued message ({f.message_bytes:.0f} bytes encoded; "
            f"{f.redis_bytes / 1e6:.1f} MB for {_n(f.enqueued)})",
        ]
    if r.hot_sync_ms:
        lines += ["", "a customer with k subscriptions: one steady-state sync (median of 10)"]
        lines += [f"  k={k:<5} {ms:.2f} ms" for k, ms in r.hot_sync_ms.items()]
    if r.bursts:
        lines += [
            "",
            "bursts through 2 worker processes (one event per subscription; the customer lock serialises one customer):",
        ]
        lines += [_drained(d) for d in r.bursts]
    if r.pools:
        lines += ["", "workers draining the same backlog (CPU share of the whole machine):"]
        lines += [_drained(d) for d in r.pools]
    if r.errors:
        lines += ["", *("not measured: " + e for e in r.errors)]
    lines += ["", *(f"{'PASS' if ok else 'FAIL'} {text}" for ok, text in verdicts(r))]
    lines.append(f"(scale section took {r.elapsed:.0f} s)")
    return "\n".join(lines)


def _drained(d: Drained) -> str:
    median = statistics.median(d.message_ms) if d.message_ms else 0.0
    return (
        f"  {d.processes}x{d.threads} {d.label}: {d.seconds:.2f} s, {d.per_second:.0f} syncs/s, message median "
        f"{median:.1f} ms; CPU worker {d.share(d.worker_cpu):.0%} postgres {d.share(d.postgres_cpu):.0%} "
        f"({d.worker_cpu / d.count * 1000:.2f} / {d.postgres_cpu / d.count * 1000:.2f} ms per sync)"
    )
