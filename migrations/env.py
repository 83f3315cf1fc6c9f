"""Alembic environment for subsync.

Configured programmatically by `worker.store.migrations` (`subsync db upgrade`, no ini file), or by the
repository's alembic.ini when the `alembic` command runs from the repository top. The database
URL comes from `config.attributes["url"]`, else the `sqlalchemy.url` option, else `DATABASE_URL`.
Online runs take a Postgres advisory lock so concurrent `subsync db upgrade` runs (several
containers starting at once) apply each migration exactly once.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import create_engine, pool, text

from worker.store.db import normalize_database_url
from worker.store.migrations import MIGRATION_LOCK_KEY
from worker.store.tables import metadata

config = context.config
target_metadata = metadata

if config.config_file_name is not None:  # the alembic command with alembic.ini: its log lines on stderr
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise CommandError("no database URL: set DATABASE_URL (or use `subsync db upgrade`)")
    return normalize_database_url(str(url))


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with_connection(connection)
        return
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as new_connection:
            _run_with_connection(new_connection)
    finally:
        engine.dispose()


def _run_with_connection(connection: object) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.execute(text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=MIGRATION_LOCK_KEY))
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
