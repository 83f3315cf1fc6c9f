"""Process configuration, read from the environment (CONTRACT §1)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["console", "json"]


class Settings(BaseSettings):
    """Environment configuration. Unset URLs mean "use the embedded server under `home`"."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL"))
    home: Path = Field(default=Path("./.subsync"), validation_alias=AliasChoices("SUBSYNC_HOME"))
    log_format: LogFormat | None = Field(default=None, validation_alias=AliasChoices("SUBSYNC_LOG_FORMAT"))
    #: Most target lines one sync may generate (README "Period generation"); more fails the sync, not retried.
    max_target_lines: int = Field(default=100_000, ge=1, validation_alias=AliasChoices("SUBSYNC_MAX_TARGET_LINES"))

    @field_validator("database_url", "redis_url", "log_format", mode="before")
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


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # closed stream
        return False


def load_settings() -> Settings:
    """Read the settings from the current environment."""
    return Settings()


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
