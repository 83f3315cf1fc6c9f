"""Schema migrations (Alembic, configured in code; scripts live in `migrations/` at the repo root)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from worker.infra.logging import get_logger
from worker.store.db import normalize_database_url

log = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config for `url` without any ini file."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(f"migration scripts not found in {MIGRATIONS_DIR} (install the project editable)")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # Passed as an attribute, not an ini option, so '%' in passwords needs no escaping.
    config.attributes["url"] = normalize_database_url(url)
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql+psycopg://unused/unused")).get_current_head()


def current_revision(url: str) -> str | None:
    engine = create_engine(normalize_database_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> str | None:
    """Migrate to `revision` (default head). Logs a line only when something changed; returns the new revision."""
    before = current_revision(url)
    command.upgrade(alembic_config(url), revision)
    after = current_revision(url)
    if after != before:
        log.info("database migrated", from_revision=before, to_revision=after)
    return after


def downgrade(url: str, revision: str) -> str | None:
    """Migrate down to `revision` (`base` removes every table). Returns the new revision."""
    before = current_revision(url)
    command.downgrade(alembic_config(url), revision)
    after = current_revision(url)
    if after != before:
        log.info("database migrated", from_revision=before, to_revision=after)
    return after
