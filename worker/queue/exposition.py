"""The worker's HTTP endpoint on its metrics port (docs/operations.md §4 "Health" and "Metrics").

`Exposition` is Dramatiq's Prometheus middleware with this module's server instead of Dramatiq's
(which answered 200 with the metrics to any path). The `dramatiq` supervisor forks one process to run
`serve()`, which answers:

- `GET /metrics`: the worker processes' metrics (prometheus_client's multiprocess folder) and gauges
  read at scrape time, at most every `STATUS_CACHE_SECONDS`, from what `subsync status` computes
  (`worker.queue.status`): queue depth by state, dead letters, due subscriptions and the
  reconciler's overdue seconds. No round trip per message.
- `GET /livez`: 200 when every worker process's consumer and worker threads are alive and
  heart-beating (`worker.queue.liveness`), else 503 with what is wrong — restart the worker.
- `GET /readyz`: 200 when Postgres answers `SELECT 1`, its schema is at this release's head, and
  Redis answers `PING`, each with a short timeout, checked at most every `READY_CACHE_SECONDS`; else
  503 naming the failed check.
- anything else: 404. `HEAD` answers as `GET` does, without the body. A connection must send its
  request within `READ_TIMEOUT_SECONDS`, and at most `MAX_CONNECTIONS` are served at once.

Bodies of the health endpoints are JSON: `{"status": "ok" | "fail", ...}`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.prometheus import Prometheus
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url

from worker.config import Settings, load_settings, secret
from worker.contract.events import QUEUE_NAME
from worker.infra.clock import utcnow
from worker.infra.logging import configure_logging, get_logger
from worker.queue.liveness import assess, health_dir, read_reports
from worker.queue.status import delayed_in_memory, status
from worker.store.db import make_engine

log = get_logger(__name__)

#: Readiness is checked at most this often (a result is reused by the probes in between).
READY_CACHE_SECONDS = 2.0
#: The scrape-time gauges are computed at most this often.
STATUS_CACHE_SECONDS = 5.0
#: Timeouts of the readiness checks and the gauges' queries.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 2  # libpq's minimum
_SET_STATEMENT_TIMEOUT = "SET statement_timeout = '5s'"  # of the gauges' query and the readiness check
REDIS_TIMEOUT_SECONDS = 1.0
#: How long the server waits for a request on a connection (docs/operations.md §4).
READ_TIMEOUT_SECONDS = 5.0
#: Connections served at once; more are closed at once (a probe retries).
MAX_CONNECTIONS = 32

Response = tuple[int, str, bytes]


class Exposition(Prometheus):
    """Dramatiq's Prometheus middleware (its `dramatiq_*` metrics), served by `serve()`: metrics,
    liveness and readiness on the metrics port.

    Parameters: none.
    """

    @property
    def forks(self) -> list[Callable[[], int]]:
        return [serve]

    def before_delay_message(self, broker: Any, message: Any) -> None:
        """Dramatiq's `dramatiq_delayed_messages_inprogress` is left unrecorded: it counts a retry up
        under the delay queue's name and down under the main queue's (in whichever process runs it), so
        it went negative, one series per pid. `serve()` reports the gauge at scrape time instead, from
        Redis (`worker.queue.status.delayed_in_memory`; docs/operations.md §4 "Metrics")."""


class _Cached:
    """A value recomputed at most every `ttl` seconds; concurrent callers wait for one computation."""

    def __init__(self, ttl: float, compute: Callable[[], Any]) -> None:
        self.ttl = ttl
        self.compute = compute
        self._lock = threading.Lock()
        self._at: float | None = None
        self._value: Any = None

    def get(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if self._at is None or now - self._at >= self.ttl:
                self._value = self.compute()
                self._at = time.monotonic()
            return self._value


class Health:
    """What the endpoints answer, from the settings of the `subsync worker` that forked this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        database_url, redis_url = secret(settings.database_url), secret(settings.redis_url)
        self.engine: Engine | None = None
        if database_url is not None:
            url = make_url(database_url).update_query_dict({"connect_timeout": str(POSTGRES_CONNECT_TIMEOUT_SECONDS)})
            self.engine = make_engine(
                url.render_as_string(hide_password=False),
                pool_size=1,
                max_overflow=1,
                application_name="subsync-health",
            )
            event.listen(self.engine, "connect", _set_statement_timeout)
        self.redis: redis.Redis | None = None
        self.broker: RedisBroker | None = None
        if redis_url is not None:
            self.redis = redis.Redis.from_url(
                redis_url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
            )
            # Only for `worker.queue.status` (its keys and client): no middleware, no queue declared.
            make: Any = RedisBroker  # untyped in Dramatiq
            self.broker = make(
                client=self.redis,
                namespace=settings.broker_namespace,
                middleware=[],
                heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
            )
        self._ready = _Cached(READY_CACHE_SECONDS, self._check_ready)
        self._status = _Cached(STATUS_CACHE_SECONDS, self._read_status)
        self._last: dict[str, bool] = {}

    # --- liveness --------------------------------------------------------------------------------

    def livez(self) -> Response:
        directory = health_dir(self.settings.metrics_dir) if self.settings.metrics_dir is not None else None
        reports = read_reports(directory) if directory is not None else []
        problems = assess(reports, time.monotonic(), self.settings.liveness_timeout_seconds)
        self._note("live", not problems, problems)
        body: dict[str, Any] = {"status": "fail" if problems else "ok", "worker_processes": len(reports)}
        if problems:
            body["problems"] = problems
        return _json(503 if problems else 200, body)

    # --- readiness -------------------------------------------------------------------------------

    def readyz(self) -> Response:
        checks: dict[str, str] = self._ready.get()
        ok = all(result == "ok" for result in checks.values())
        self._note("ready", ok, [f"{name}: {result}" for name, result in checks.items() if result != "ok"])
        return _json(200 if ok else 503, {"status": "ok" if ok else "fail", "checks": checks})

    def _check_ready(self) -> dict[str, str]:
        checks = {"postgres": self._check(self._ping_postgres), "redis": self._check(self._ping_redis)}
        if checks["postgres"] == "ok":
            checks["schema"] = self._check(self._check_schema)
        return checks

    def _ping_postgres(self) -> None:
        if self.engine is None:
            raise RuntimeError("DATABASE_URL is not set")
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _check_schema(self) -> None:
        """The schema is at this release's head: a worker on an unmigrated (or newer) database would
        take messages from the shared queue and fail them (docs/operations.md §4)."""
        # lazy: Alembic is loaded by the first readiness check, not by every worker process
        from worker.store.migrations import schema_problem

        assert self.engine is not None  # checked after `_ping_postgres` succeeded
        with self.engine.connect() as conn:
            problem = schema_problem(conn)
        if problem is not None:
            raise SchemaNotAtHead(problem)

    def _ping_redis(self) -> None:
        if self.redis is None:
            raise RuntimeError("REDIS_URL is not set")
        self.redis.ping()

    @staticmethod
    def _check(ping: Callable[[], None]) -> str:
        try:
            ping()
        except Exception as exc:  # any failure means not ready; say which
            return _describe(exc)
        return "ok"

    # --- metrics ---------------------------------------------------------------------------------

    def _read_status(self) -> dict[str, Any] | None:
        if self.engine is None or self.broker is None:
            return None
        try:
            now = utcnow()
            data = status(self.engine, self.broker, now=now)
            data["delayed_in_memory"] = delayed_in_memory(self.broker, now_ms=int(now.timestamp() * 1000))
        except Exception as exc:  # the gauges are left out; subsync_status_up says they are missing
            self._note("able to read the status gauges", False, [_describe(exc)])
            return None
        self._note("able to read the status gauges", True, [])
        return data

    def status_metrics(self) -> Iterator[Any]:
        """The scrape-time gauges (a prometheus_client collector's `collect`)."""
        # lazy: prometheus_client picks multiprocess mode at import (worker.queue.metrics)
        from prometheus_client.core import GaugeMetricFamily

        data = self._status.get()
        yield GaugeMetricFamily(
            "subsync_status_up",
            "1 when the queue and reconciler gauges below could be read (Postgres and Redis answered), else 0.",
            value=0 if data is None else 1,
        )
        if data is None:
            return
        depth = GaugeMetricFamily(
            "subsync_queue_messages",
            "Messages on the queue: ready (waiting), in_progress (taken, not acknowledged), delayed (retry backoff).",
            labels=["queue_name", "state"],
        )
        for state in ("ready", "in_progress", "delayed"):
            depth.add_metric([QUEUE_NAME, state], float(data[state]))
        yield depth
        delayed = GaugeMetricFamily(
            "dramatiq_delayed_messages_inprogress",
            "Retries held in memory by live workers until their eta (read from Redis at scrape time).",
            labels=["queue_name", "actor_name"],
        )
        for actor_name, count in sorted(data["delayed_in_memory"].items()):
            delayed.add_metric([QUEUE_NAME, actor_name], float(count))
        yield delayed
        dead = GaugeMetricFamily(
            "subsync_dead_letter_messages", "Messages in the dead-letter queue.", labels=["queue_name"]
        )
        dead.add_metric([QUEUE_NAME], float(data["dead_letters"]))
        yield dead
        yield GaugeMetricFamily(
            "subsync_due_subscriptions",
            "Subscriptions due for a sync now (next_sync_after passed, or never synced).",
            value=float(data["due_subscriptions"]),
        )
        yield GaugeMetricFamily(
            "subsync_reconcile_overdue_seconds",
            "How long ago the oldest due next_sync_after was (0 when none is due).",
            value=float(data["overdue_seconds"] or 0),
        )

    def metrics_registry(self) -> Any:
        # lazy: prometheus_client picks multiprocess mode at import (worker.queue.metrics)
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        collect_files: Any = multiprocess.MultiProcessCollector  # untyped in prometheus_client
        collect_files(registry, path=str(self.settings.metrics_dir))
        registry.register(_Collector(self.status_metrics))
        return registry

    def _note(self, what: str, ok: bool, problems: list[str]) -> None:
        """Log when liveness or readiness changes (not at every probe)."""
        if self._last.get(what, True) != ok:
            if ok:
                log.info(f"worker is {what} again")
            else:
                log.warning(f"worker is not {what}", problems=problems)
        self._last[what] = ok


class SchemaNotAtHead(Exception):
    """The database schema is not this release's head (the message says what to run)."""


class _Collector:
    def __init__(self, collect: Callable[[], Iterator[Any]]) -> None:
        self.collect = collect


def _set_statement_timeout(dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute(_SET_STATEMENT_TIMEOUT)
    dbapi_connection.commit()


def _describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:300]


def _json(code: int, body: dict[str, Any]) -> Response:
    return code, "application/json", json.dumps(body).encode()


def handler_class(health: Health) -> type[BaseHTTPRequestHandler]:
    # lazy: prometheus_client picks multiprocess mode at import (worker.queue.metrics)
    import prometheus_client as prom

    registry = health.metrics_registry()

    def metrics() -> Response:
        return 200, prom.CONTENT_TYPE_LATEST, prom.generate_latest(registry)

    routes: dict[str, Callable[[], Response]] = {"/metrics": metrics, "/livez": health.livez, "/readyz": health.readyz}

    class Handler(BaseHTTPRequestHandler):
        #: A request must arrive within this many seconds of the connection (and of each other on a
        #: kept-alive one): an idle or half-sent connection is closed instead of holding a thread.
        timeout = READ_TIMEOUT_SECONDS

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:  # what a GET answers, without the body (docs/operations.md §4)
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            route = routes.get(urlsplit(self.path).path)
            if route is None:
                code, content_type, content = (
                    404,
                    "text/plain; charset=utf-8",
                    b"not found: try /metrics, /livez, /readyz\n",
                )
            else:
                try:
                    code, content_type, content = route()
                except Exception as exc:  # an endpoint's own failure must not look healthy
                    log.exception("health endpoint failed", path=self.path)
                    code, content_type, content = _json(500, {"status": "fail", "error": _describe(exc)})
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:
                self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per probe would drown the worker's log

    return Handler


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most `MAX_CONNECTIONS` at once: a connection beyond them is closed
    at once (each one's reads time out after `READ_TIMEOUT_SECONDS`, so the slots come back)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve() -> int:
    """The exposition server's process (forked by the `dramatiq` supervisor): serve until SIGTERM."""
    settings = load_settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    server = BoundedHTTPServer((settings.metrics_host, settings.metrics_port), handler_class(Health(settings)))
    log.info("health and metrics served", host=settings.metrics_host, port=settings.metrics_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
