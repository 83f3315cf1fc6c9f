"""Every setting of subsync, read from the environment in one place (docs/contract.md §1).

`Settings` is the only reader of environment variables in the project: `DATABASE_URL` and `REDIS_URL`
(secrets: their `repr` never shows a password), and every `SUBSYNC_*` variable (the field name in
capitals with that prefix, e.g. `SUBSYNC_TIME_LIMIT_SECONDS`). `worker.bootstrap` turns it into an
engine, a broker and actors.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["console", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

DEFAULT_BROKER_NAMESPACE = "dramatiq"


#: Most target lines one sync may generate unless `SUBSYNC_MAX_TARGET_LINES` says otherwise.
DEFAULT_MAX_TARGET_LINES = 100_000


class Settings(BaseSettings):
    """Environment configuration. Unset URLs mean "use the embedded server under `home`"."""

    model_config = SettingsConfigDict(
        env_prefix="SUBSYNC_", extra="ignore", case_sensitive=False, frozen=True, populate_by_name=True
    )

    # --- where things are ------------------------------------------------------------------------
    database_url: SecretStr | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL"))
    redis_url: SecretStr | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL"))
    #: Folder of the embedded servers' data.
    home: Path = Path("./.subsync")
    #: Most target lines one sync may generate (docs/sync.md §3.11); more fails the sync, not retried.
    max_target_lines: int = Field(default=DEFAULT_MAX_TARGET_LINES, ge=1)
    #: Reuse a recorded decision that still holds (docs/sync.md §8.6); false decides every sync in full.
    reuse_decisions: bool = True

    # --- logging -------------------------------------------------------------------------------------
    log_format: LogFormat | None = None  # unset: console on a TTY, else json
    log_level: LogLevel = "INFO"

    # --- the worker ----------------------------------------------------------------------------------
    #: Invoice the customer's pending lines after a created/updated/continued/cancelled sync (docs/sync.md §8.3).
    invoice_after_sync: bool = True
    #: Prefix of every Redis key of the broker (Dramatiq's `namespace`).
    broker_namespace: str = Field(default=DEFAULT_BROKER_NAMESPACE, min_length=1, max_length=64)
    #: Longest time one message may run before it is interrupted (and retried).
    time_limit_seconds: float = Field(default=300.0, gt=0)
    #: `reconcile_due` pages through every due subscription, so it gets a longer limit.
    reconcile_time_limit_seconds: float = Field(default=1800.0, gt=0)
    transient_max_retries: int = Field(default=10, ge=0)
    domain_max_retries: int = Field(default=3, ge=0)
    min_backoff_ms: int = Field(default=1000, ge=1)
    max_backoff_ms: int = Field(default=300_000, ge=1)
    #: Furthest ahead a message's `options.eta` may be (never less than the max backoff; 7 days is the
    #: longest delay Dramatiq sends): a later one is dead-lettered as `invalid_envelope`.
    max_delay_seconds: int = Field(default=7 * 86_400, ge=1)
    #: On shutdown, in-flight syncs may finish for this long; then they are interrupted and requeued.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    #: Drop (dead-letter) messages older than this; unset: no limit.
    max_age_seconds: float | None = Field(default=None, gt=0)
    #: How long dead letters are kept in Redis.
    dead_letter_ttl_seconds: int = Field(default=7 * 86400, ge=60)
    #: Prometheus exposition port of `subsync worker` (0 disables metrics).
    metrics_port: int = Field(default=9191, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    #: prometheus_client's multiprocess folder; `subsync worker` sets it for its processes when
    #: metrics are on (a worker process records metrics only when it is set).
    metrics_dir: Path | None = None
    #: Liveness (`/livez`, docs/operations.md §4): a consumer thread that has not polled Redis for this
    #: long, or a message running this long past its time limit, means the worker is wedged. Keep it
    #: above the 30 s Redis socket timeout a poll may block for.
    liveness_timeout_seconds: float = Field(default=60.0, gt=0)
    #: Page size of `reconcile_due`.
    reconcile_page_size: int = Field(default=500, ge=1, le=10_000)
    #: Threads of one worker process (`subsync worker --threads` sets it): its connection pool size.
    worker_threads: int = Field(default=8, ge=1)
    #: A worker process whose last Redis command is older than this is presumed dead: the next
    #: maintenance pass of any other worker puts its unacknowledged messages back on the queue.
    #: Keep it well above the idle poll interval (1 s) and the longest Redis outage you ride out.
    broker_heartbeat_timeout_ms: int = Field(default=60_000, ge=1_000)
    #: Out of a million broker commands, how many also run that maintenance (Dramatiq's default 1000:
    #: an idle worker makes about 2 commands a second, so it runs every ~8 minutes on average).
    broker_maintenance_chance: int = Field(default=1_000, ge=0, le=1_000_000)

    # --- tests only ----------------------------------------------------------------------------------
    #: Fault injection of the reliability tests (`worker.infra.faults`); never set it in production.
    fault_block_after_write: int | None = Field(default=None, gt=0)

    @field_validator("database_url", "redis_url", "log_format", "metrics_dir", "fault_block_after_write", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("home", mode="before")
    @classmethod
    def _blank_home_is_default(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return Path("./.subsync")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def home_path(self) -> Path:
        """`SUBSYNC_HOME` as an absolute path (the folder may not exist yet)."""
        return self.home.expanduser().resolve()

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def effective_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return "console" if _isatty(sys.stderr) else "json"

    @property
    def metrics_enabled(self) -> bool:
        """Whether this worker process records metrics (`subsync worker` with a metrics port)."""
        return self.metrics_port > 0 and self.metrics_dir is not None


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # closed stream
        return False


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the current environment (`overrides` win, by field name)."""
    return Settings(**overrides)  # type: ignore[arg-type]


def environment_variable(field: str) -> str:
    """The environment variable of a `Settings` field (`log_format` → `SUBSYNC_LOG_FORMAT`)."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"SUBSYNC_{field.upper()}" if info is not None else field


def secret(value: SecretStr | None) -> str | None:
    """The plain text of an optional secret setting."""
    return None if value is None else value.get_secret_value()


def describe_url(url: str) -> str:
    """Where a database/broker URL points, as `host/database`, never with credentials.

    TCP hosts print as `host:port`; unix sockets as `unix:<path>`. For Redis the
    database is the db index (`0` unless the URL says otherwise).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    scheme = parts.scheme.split("+", 1)[0].lower()
    query = parse_qs(parts.query)
    try:
        hostname, port = parts.hostname, parts.port
    except ValueError:
        hostname, port = parts.hostname, None
    if scheme == "unix":
        host = f"unix:{parts.path}"
        database = query.get("db", ["0"])[0]
        return f"{host}/{database}"
    if hostname:
        host = f"[{hostname}]" if ":" in hostname else hostname
        if port is not None:
            host = f"{host}:{port}"
    elif "host" in query:
        host = f"unix:{query['host'][0]}"
    else:
        host = "localhost"
    database = parts.path.lstrip("/")
    if scheme in ("redis", "rediss") and not database:
        database = query.get("db", ["0"])[0]
    return f"{host}/{database or '-'}"
