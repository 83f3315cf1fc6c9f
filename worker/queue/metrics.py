"""Prometheus metrics of the worker, next to Dramatiq's own (`dramatiq_*`).

The counters are defined (with their help text) in `_Metrics` below; the README lists them.

`prometheus_client` decides at import whether it runs in multiprocess mode, so it is imported only
after Dramatiq's Prometheus middleware has set `PROMETHEUS_MULTIPROC_DIR` (at process boot). Until
then — and in processes without metrics (the CLI, the demo, tests) — recording is a no-op.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

_lock = threading.Lock()
_metrics: _Metrics | None = None


class _Metrics:
    def __init__(self) -> None:
        # lazy: prometheus_client picks multiprocess mode at import (see the module docstring)
        import prometheus_client as prom

        registry = prom.CollectorRegistry()  # values go to the multiprocess directory
        self.patches = prom.Counter(
            "subsync_patches_total", "Patches applied by subscription syncs.", ["op"], registry=registry
        )
        self.failures = prom.Counter(
            "subsync_sync_failures_total", "Failed message attempts by reason.", ["reason", "actor"], registry=registry
        )
        self.syncs = prom.Counter("subsync_syncs_total", "Subscriptions synced.", ["actor"], registry=registry)
        self.invoices = prom.Counter(
            "subsync_invoices_created_total", "Invoices created after syncs.", registry=registry
        )


def enable() -> None:
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()


def record_sync(actor: str, counts: Mapping[str, int]) -> None:
    metrics = _metrics
    if metrics is None:
        return
    metrics.syncs.labels(actor).inc()
    for op, n in counts.items():
        if n:
            metrics.patches.labels(op).inc(n)


def record_failure(actor: str, reason: str) -> None:
    metrics = _metrics
    if metrics is not None:
        metrics.failures.labels(reason, actor).inc()


def record_invoices(n: int) -> None:
    metrics = _metrics
    if metrics is not None and n:
        metrics.invoices.inc(n)


def enabled() -> bool:
    return _metrics is not None
