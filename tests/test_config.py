"""Configuration from the environment (docs/contract.md §1)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from worker.config import Settings, describe_url
from worker.store.db import normalize_database_url


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("postgresql+psycopg://user:s3cret@db.example.com:5432/billing", "db.example.com:5432/billing"),
        ("postgresql://user@10.0.0.5/app?sslmode=require", "10.0.0.5/app"),
        ("postgresql+psycopg://postgres@/subsync?host=%2Ftmp%2Fpg&port=5432", "unix:/tmp/pg/subsync"),
        ("redis://:s3cret@cache:6380/2", "cache:6380/2"),
        ("redis://cache", "cache/0"),
        ("rediss://user:s3cret@[::1]:6379/1", "[::1]:6379/1"),
        ("unix:///run/redis.sock", "unix:/run/redis.sock/0"),
    ],
)
def test_describe_url_shows_host_and_database_only(url: str, described: str) -> None:
    assert describe_url(url) == described
    assert "s3cret" not in describe_url(url)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("REDIS_URL", "  ")
    monkeypatch.setenv("SUBSYNC_HOME", "/var/lib/subsync")
    monkeypatch.setenv("SUBSYNC_LOG_FORMAT", "json")
    settings = Settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgresql+psycopg://u@h/db"
    assert settings.redis_url is None and settings.uses_embedded_redis
    assert settings.home_path == Path("/var/lib/subsync")
    assert settings.effective_log_format == "json"


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "SUBSYNC_HOME", "SUBSYNC_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    settings = Settings()
    assert settings.uses_embedded_database and settings.uses_embedded_redis
    assert settings.home_path == (Path.cwd() / ".subsync").resolve()
    assert settings.effective_log_format == "json"  # stderr is not a TTY


def test_plain_postgres_urls_use_psycopg3() -> None:
    assert normalize_database_url("postgresql://u:p@h:5432/d") == "postgresql+psycopg://u:p@h:5432/d"
    assert normalize_database_url("postgres://h/d") == "postgresql+psycopg://h/d"
    assert normalize_database_url("postgresql+psycopg://h/d") == "postgresql+psycopg://h/d"


def test_the_database_url_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u:s3cret@h/db")
    monkeypatch.setenv("REDIS_URL", "redis://:s3cret@cache:6379/0")
    settings = Settings()
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_worker_settings_come_from_subsync_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBSYNC_TIME_LIMIT_SECONDS", "12.5")
    monkeypatch.setenv("SUBSYNC_WORKER_THREADS", "3")
    monkeypatch.setenv("SUBSYNC_FAULT_BLOCK_AFTER_WRITE", " ")
    settings = Settings()
    assert settings.time_limit_seconds == 12.5 and settings.worker_threads == 3
    assert settings.fault_block_after_write is None
