"""What a command runs against: the settings, and the database and broker built from them by
`worker.bootstrap`, each resolved on first use (a command that needs no database never starts the
embedded one)."""

from __future__ import annotations

import typer
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy.engine import Engine

from worker import bootstrap
from worker.config import Settings
from worker.infra.logging import get_logger

log = get_logger("worker.cli")


class Runtime:
    """The settings of one invocation and the engine and broker built from them (closed at the end)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._database_url: str | None = None
        self._broker_url: str | None = None
        self._engine: Engine | None = None
        self._broker: RedisBroker | None = None

    def describe(self) -> dict[str, str]:
        """Where the database and the broker are (host and database only), without connecting."""
        return bootstrap.describe(self.settings)

    def announce(self, command: str) -> None:
        """The one line every command prints: which database and broker it uses."""
        log.info(f"subsync {command}".strip(), **self.describe())

    def database_url(self, *, migrate_embedded: bool = True) -> str:
        """The database URL; an embedded database is started and migrated to head first."""
        if self._database_url is None:
            self._database_url = bootstrap.database_url(self.settings, migrate_embedded=migrate_embedded)
        return self._database_url

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = bootstrap.engine(self.settings, self.database_url())
        return self._engine

    def broker_url(self) -> str:
        """`REDIS_URL`, or the URL of the embedded Redis (started if needed)."""
        if self._broker_url is None:
            self._broker_url = bootstrap.redis_url(self.settings)
        return self._broker_url

    def broker(self) -> RedisBroker:
        """The broker on `broker_url()`, with the worker's middleware and queue."""
        if self._broker is None:
            self._broker = bootstrap.broker(self.settings, self.broker_url())
        return self._broker

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._broker is not None:
            self._broker.close()
            self._broker = None


def get_runtime(ctx: typer.Context) -> Runtime:
    """The Runtime created by the root callback for this invocation."""
    runtime = ctx.find_root().obj
    if not isinstance(runtime, Runtime):
        raise RuntimeError("the subsync root callback did not run")
    return runtime
