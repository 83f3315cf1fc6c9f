"""The composition root: `Settings` → database URL, engine, broker, actors.

Every process wires itself here and nowhere else: the command line (`worker.cli.runtime`), the
Dramatiq worker process (`worker.process`), the demo and the tests. Nothing here is a module global:
each call builds what it is asked for from the settings it is given, so a test (or a second command
in the same process) with other settings gets other objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from worker.config import Settings, describe_url, secret
from worker.infra.logging import get_logger
from worker.store.db import make_engine, normalize_database_url

if TYPE_CHECKING:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    from worker.queue.actors import Actors, ActorSettings

log = get_logger(__name__)


def describe(settings: Settings) -> dict[str, str]:
    """Where the database and the broker are (host and database only), without connecting."""
    database_url, redis_url = secret(settings.database_url), secret(settings.redis_url)
    if database_url is None:
        database = f"embedded postgres in {settings.home_path / 'postgres'}, database subsync"
    else:
        database = describe_url(database_url)
    if redis_url is None:
        broker = f"embedded redis in {settings.home_path / 'redis'}"
    else:
        broker = describe_url(redis_url)
    return {"database": database, "broker": broker}


def database_url(settings: Settings, *, migrate_embedded: bool = False) -> str:
    """`DATABASE_URL`, or the URL of the embedded Postgres (started if needed, and migrated to head
    when `migrate_embedded`: a real database is only ever migrated by `subsync db upgrade`)."""
    configured = secret(settings.database_url)
    if configured is not None:
        return normalize_database_url(configured)
    # lazy: starting the embedded server needs its package only when DATABASE_URL is unset
    from worker.infra.embedded import ensure_postgres

    url = ensure_postgres(settings.home_path)
    if migrate_embedded:
        # lazy: Alembic costs ~0.2 s of start-up, paid only by commands that use the embedded database
        from worker.store import migrations

        migrations.upgrade(url)
    return url


def redis_url(settings: Settings) -> str:
    """`REDIS_URL`, or the URL of the embedded Redis (started if needed)."""
    configured = secret(settings.redis_url)
    if configured is not None:
        return configured
    # lazy: the embedded server only when REDIS_URL is unset
    from worker.infra.embedded import ensure_redis

    return ensure_redis(settings.home_path)


def engine(settings: Settings, url: str | None = None, *, pool_size: int = 2, max_overflow: int = 2) -> Engine:
    """An engine on `url` (default: `database_url(settings)`), as the command line uses it."""
    return make_engine(url or database_url(settings), pool_size=pool_size, max_overflow=max_overflow)


def broker(settings: Settings, url: str | None = None, *, metrics: bool = False) -> RedisBroker:
    """The worker's Redis broker on `url` (default: `redis_url(settings)`), its queue declared."""
    # lazy: Dramatiq costs ~0.15 s of start-up; the command line's database-only commands never load it
    from worker.queue.broker import build_broker

    return build_broker(url or redis_url(settings), settings, metrics=metrics)


@dataclass
class LazyEngine:
    """The worker process's engine, created on first use (one pool of `worker_threads` connections),
    with the reliability tests' fault hook when the settings ask for it."""

    settings: Settings
    url: str | None = None
    _engine: Engine | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __call__(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = self._create()
            return self._engine

    def _create(self) -> Engine:
        settings = self.settings
        created = make_engine(
            self.url or database_url(settings),
            pool_size=settings.worker_threads,
            max_overflow=4,
            application_name="subsync-worker",
        )
        if settings.fault_block_after_write is not None:
            # lazy: test-only code, never loaded in production
            from worker.infra.faults import install_block_after_write

            install_block_after_write(created, settings.fault_block_after_write)
            log.warning("fault injection is on: syncs block after writing invoice lines")
        return created

    def warm(self) -> None:
        """Create the engine and open one pooled connection now (at worker process boot), not on the
        first message (~250 ms measured in bench/)."""
        with self().connect():
            pass

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


@dataclass(frozen=True)
class Worker:
    """A wired worker: its broker with the actors declared on it, and the engine they run against."""

    settings: Settings
    broker: dramatiq.Broker
    actors: Actors
    engine: Callable[[], Engine]


def actor_settings(settings: Settings) -> ActorSettings:
    """The settings the actors of `worker.queue.actors` run with."""
    from worker.queue.actors import ActorSettings  # lazy: see `broker`

    return ActorSettings(
        time_limit_ms=int(settings.time_limit_seconds * 1000),
        reconcile_time_limit_ms=int(settings.reconcile_time_limit_seconds * 1000),
        invoice_after_sync=settings.invoice_after_sync,
        max_target_lines=settings.max_target_lines,
        page_size=settings.reconcile_page_size,
        reuse_decisions=settings.reuse_decisions,
    )


def worker(settings: Settings, broker: dramatiq.Broker, *, engine: Callable[[], Engine] | None = None) -> Worker:
    """Declare the actors on `broker` (once per broker), with the settings bound (`actor_settings`),
    running against `engine` (default: a `LazyEngine` of the settings)."""
    from worker.queue.actors import declare_actors  # lazy: see `broker`

    engine = engine or LazyEngine(settings)
    actors = declare_actors(broker, actor_settings(settings), engine=engine)
    return Worker(settings, broker, actors, engine)


def worker_process(settings: Settings) -> Worker:
    """Wire a `dramatiq` worker process: the broker (with metrics when `subsync worker` turned them on)
    and its boot log line, the actors, and Dramatiq's global broker (which the `dramatiq` command runs)."""
    import dramatiq  # lazy: see `broker`

    from worker.queue.middleware.worker_boot import WorkerBoot

    process_broker = broker(settings, metrics=settings.metrics_enabled)
    engine = LazyEngine(settings)
    process_broker.add_middleware(WorkerBoot(settings.effective_log_format, describe(settings), on_boot=engine.warm))
    wired = worker(settings, process_broker, engine=engine)
    dramatiq.set_broker(process_broker)
    return wired
