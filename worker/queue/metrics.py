"""Prometheus metrics recorded by the worker processes, next to Dramatiq's own (`dramatiq_*`).

Conventions (docs/operations.md §4): counters end in `_total`, durations are `_seconds` histograms,
the actor label is `actor_name` as in Dramatiq's metrics. The gauges read at scrape time (queue
depth, dead letters, overdue seconds) are `worker.queue.exposition`'s; docs/operations.md §4 lists every metric.

`prometheus_client` decides at import whether it runs in multiprocess mode, so it is imported only
after Dramatiq's Prometheus middleware has set `PROMETHEUS_MULTIPROC_DIR` (at process boot). Until
then — and in processes without metrics (the CLI, the demo, tests) — recording is a no-op.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

#: Upper bounds of `subsync_message_duration_seconds`: a quick sync takes milliseconds, `reconcile_due`
#: may take up to its 30 min time limit.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

_lock = threading.Lock()
_metrics: _Metrics | None = None


class _Metrics:
    def __init__(self) -> None:
        # lazy: prometheus_client picks multiprocess mode at import (see the module docstring)
        import prometheus_client as prom

        registry = prom.CollectorRegistry()  # values go to the multiprocess directory
        self.durations = prom.Histogram(
            "subsync_message_duration_seconds",
            "Time spent handling one message attempt, by actor and outcome (done or failed).",
            ["actor_name", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.failures = prom.Counter(
            "subsync_message_failures_total",
            "Failed message attempts, by actor, failure reason and its kind (invalid, transient, domain).",
            ["actor_name", "reason", "kind"],
            registry=registry,
        )
        self.syncs = prom.Counter(
            "subsync_syncs_total", "Subscription syncs committed, by actor.", ["actor_name"], registry=registry
        )
        self.patches = prom.Counter(
            "subsync_patches_total", "Patches applied by subscription syncs, by operation.", ["op"], registry=registry
        )
        self.invoices = prom.Counter(
            "subsync_invoices_created_total", "Invoices created after syncs.", registry=registry
        )


def enable() -> None:
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()


def record_duration(actor_name: str, outcome: str, seconds: float) -> None:
    metrics = _metrics
    if metrics is not None:
        metrics.durations.labels(actor_name, outcome).observe(seconds)


def record_sync(actor_name: str, counts: Mapping[str, int]) -> None:
    metrics = _metrics
    if metrics is None:
        return
    metrics.syncs.labels(actor_name).inc()
    for op, n in counts.items():
        if n:
            metrics.patches.labels(op).inc(n)


def record_failure(actor_name: str, reason: str, kind: str) -> None:
    metrics = _metrics
    if metrics is not None:
        metrics.failures.labels(actor_name, reason, kind).inc()


def record_invoices(n: int) -> None:
    metrics = _metrics
    if metrics is not None and n:
        metrics.invoices.inc(n)


def enabled() -> bool:
    return _metrics is not None
