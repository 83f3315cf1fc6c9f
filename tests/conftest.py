"""Shared fixtures: a real Postgres database (fresh per test run) and a Redis URL.

- `DATABASE_URL` set: the test database is created on that server (the user needs CREATEDB).
- unset: the embedded server under `SUBSYNC_HOME` (default ./.subsync) is started or reused.

Either way a uniquely named database `subsync_test_<pid>_<random>` is created, migrated to
head, and dropped when the run ends. Tests get a clean schema from `db` (TRUNCATE of every
project table before each test).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, create_engine, pool, text

from tests.builders import delete_redis_namespace, fast_settings, unique
from worker import bootstrap
from worker.config import load_settings
from worker.infra.logging import configure_logging
from worker.queue.broker import build_broker
from worker.store import migrations as migrate
from worker.store.db import make_engine, replace_database
from worker.store.tables import ALL_TABLES

configure_logging("console")


def _admin_engine(server_url: str) -> Engine:
    return create_engine(server_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")


def _create_database(server_url: str, name: str) -> str:
    admin = _admin_engine(server_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))  # name is generated below, never user input
    finally:
        admin.dispose()
    return replace_database(server_url, name)


def _drop_database(server_url: str, name: str) -> None:
    admin = _admin_engine(server_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of a maintenance database on the test server (used to create/drop databases)."""
    return replace_database(bootstrap.database_url(load_settings()), "postgres")


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this test run, migrated to head; dropped at the end."""
    name = _unique_name("subsync_test")
    url = _create_database(server_url, name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        _drop_database(server_url, name)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Engine:
    """The session engine, with every project table emptied first."""
    names = ", ".join(table.name for table in ALL_TABLES)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} CASCADE"))
    return engine


@pytest.fixture
def empty_database(server_url: str) -> Iterator[Callable[[], str]]:
    """Factory of extra empty databases (no migrations applied); all dropped after the test."""
    created: list[str] = []

    def make() -> str:
        name = _unique_name("subsync_scratch")
        created.append(name)
        return _create_database(server_url, name)

    yield make
    for name in created:
        _drop_database(server_url, name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """`REDIS_URL`, or the embedded Redis under `SUBSYNC_HOME` (started or reused)."""
    return bootstrap.redis_url(load_settings())


@pytest.fixture
def cli_env(database_url: str, redis_url: str) -> dict[str, str]:
    """Environment for invoking the CLI (CliRunner or subprocess) against the test database."""
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SUBSYNC_LOG_FORMAT": "json"}


@pytest.fixture
def broker_namespace(redis_url: str) -> Iterator[str]:
    namespace = unique("subsync-test")
    yield namespace
    cleanup = build_broker(redis_url, fast_settings(namespace))
    try:
        delete_redis_namespace(cleanup.client, namespace)
    finally:
        cleanup.close()


@pytest.fixture
def redis_broker(redis_url: str, broker_namespace: str) -> Iterator[RedisBroker]:
    broker = build_broker(redis_url, fast_settings(broker_namespace))
    yield broker
    broker.close()
