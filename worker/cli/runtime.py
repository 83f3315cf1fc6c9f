"""What a command runs against: the settings, and the database and broker built from them by
`worker.bootstrap`, each resolved on first use (a command that needs no database never starts the
embedded one, and `--help` reads no setting and imports neither SQLAlchemy nor Dramatiq).

Logging is configured when a command first asks for its runtime (`get_runtime`): warnings and errors
only, unless `-v`/`--verbose` or `SUBSYNC_LOG_LEVEL` asks for more; long-running commands (worker,
scheduler) log at info by default (docs/contract.md §5)."""

from __future__ import annotations

import gc
import logging
import sys
from typing import TYPE_CHECKING

import typer

from worker.infra.gc_policy import apply_gc_policy

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker
    from sqlalchemy.engine import Engine

    from worker.config import Settings


_gc_paused = False


def pause_gc() -> None:
    """No cyclic garbage collection while a command starts (docs/contract.md §5, start-up speed):
    importing typer, pydantic, SQLAlchemy and psycopg allocates a few hundred thousand long-lived
    objects, and the ~200 collections that triggers cost ~60 ms of a read command. Reference counting
    still frees everything acyclic. Only the console script's `main` pauses (a process of its own)."""
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def resume_gc() -> None:
    """Collection back on if `pause_gc` turned it off: once the engine or broker exists, or when a
    long-running command starts. What start-up allocated is frozen first, and young collections run
    less often (`worker.infra.gc_policy`: modules, classes and functions live as long as the process,
    so the first collections do not scan it all, and a large sync is not collected over and over)."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        apply_gc_policy()
        gc.enable()


class Runtime:
    """The settings of one invocation and the engine and broker built from them (closed at the end)."""

    def __init__(self, settings: Settings | None = None, *, verbosity: int = 0, command: str = "") -> None:
        self.verbosity = verbosity
        self.command = command
        self._settings = settings
        self._database_url: str | None = None
        self._broker_url: str | None = None
        self._engine: Engine | None = None
        self._broker: RedisBroker | None = None
        self._log_level = logging.INFO  # until `start` chooses
        self.started = False

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self.start()
        assert self._settings is not None
        return self._settings

    @property
    def log_level(self) -> int:
        """The level logging was configured with (`start`)."""
        return self._log_level

    def start(self, *, long_running: bool = False) -> None:
        """Configure logging, read the settings (a bad one is exit 2) and log which database and broker
        this command uses (an info line: shown with -v)."""
        # lazy: structlog and pydantic (settings) cost ~0.2 s of start-up, paid when a command runs
        from worker.config import load_settings
        from worker.infra.logging import configure_logging

        self.started = True
        if long_running:
            resume_gc()  # a worker or scheduler runs for days: never without the collector
        configure_logging("console" if _isatty(sys.stderr) else "json", logging.WARNING)
        if self._settings is None:
            self._settings = load_settings()
        settings = self._settings
        if self.verbosity >= 2:
            level = logging.DEBUG
        elif self.verbosity == 1:
            level = logging.INFO
        elif "log_level" in settings.model_fields_set:  # SUBSYNC_LOG_LEVEL given
            level = logging.getLevelName(settings.log_level)
        else:
            level = logging.INFO if long_running else logging.WARNING
        self._log_level = level
        configure_logging(settings.effective_log_format, level)
        if level <= logging.INFO:  # describing the URLs imports the composition root: only when it is shown
            self.announce(self.command)

    def describe(self) -> dict[str, str]:
        """Where the database and the broker are (host and database only), without connecting."""
        from worker import bootstrap  # lazy: the composition root imports SQLAlchemy and Dramatiq

        return bootstrap.describe(self.settings)

    def announce(self, command: str) -> None:
        """The line every command logs (at info): which database and broker it uses."""
        from worker.infra.logging import get_logger  # lazy: structlog, loaded with the settings

        get_logger("worker.cli").info(f"subsync {command}".strip(), **self.describe())

    def database_url(self, *, migrate_embedded: bool = True) -> str:
        """The database URL; an embedded database is started and migrated to head first."""
        if self._database_url is None:
            from worker import bootstrap  # lazy: see describe

            self._database_url = bootstrap.database_url(self.settings, migrate_embedded=migrate_embedded)
        return self._database_url

    def engine(self) -> Engine:
        if self._engine is None:
            from worker import bootstrap  # lazy: see describe

            self._engine = bootstrap.engine(self.settings, self.database_url())
            resume_gc()  # start-up is over: the command's imports are done (see pause_gc)
        return self._engine

    def broker_url(self) -> str:
        """`REDIS_URL`, or the URL of the embedded Redis (started if needed)."""
        if self._broker_url is None:
            from worker import bootstrap  # lazy: see describe

            self._broker_url = bootstrap.redis_url(self.settings)
        return self._broker_url

    def broker(self) -> RedisBroker:
        """The broker on `broker_url()`, with the worker's middleware and queue."""
        if self._broker is None:
            from worker import bootstrap  # lazy: see describe

            self._broker = bootstrap.broker(self.settings, self.broker_url())
            resume_gc()  # see engine
        return self._broker

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._broker is not None:
            self._broker.close()
            self._broker = None


def get_runtime(ctx: typer.Context, *, long_running: bool = False) -> Runtime:
    """The Runtime created by the root callback for this invocation, started (logging configured,
    settings read) on the first call."""
    runtime = ctx.find_root().obj
    if not isinstance(runtime, Runtime):
        raise RuntimeError("the subsync root callback did not run")
    if not runtime.started:
        runtime.start(long_running=long_running)
    return runtime


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:
        return False
