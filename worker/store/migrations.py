"""Schema migrations (Alembic, configured in code).

The scripts live in `migrations/` at the repository top and are installed as the package
`worker.migrations` (setup.py maps the folder), so a wheel carries them and an editable install
reads the repository's folder.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool

from worker.infra.logging import get_logger
from worker.store.db import normalize_database_url

log = get_logger(__name__)


def migrations_dir() -> Path:
    """The folder of the installed `worker.migrations` package (the repository's `migrations/` when editable)."""
    spec = importlib.util.find_spec("worker.migrations")
    candidates = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    # An editable install made before setup.py mapped the folder: the source tree's own copy.
    candidates.append(Path(__file__).resolve().parents[2] / "migrations")
    for directory in candidates:
        if (directory / "env.py").is_file():
            return directory
    raise RuntimeError("migration scripts not found: the package worker.migrations is missing (reinstall subsync)")


def alembic_config(url: str) -> Config:
    """An Alembic config for `url` without any ini file."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("path_separator", "os")
    # Passed as an attribute, not an ini option, so '%' in passwords needs no escaping.
    config.attributes["url"] = normalize_database_url(url)
    return config


@functools.cache
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


@dataclass(frozen=True)
class Revision:
    """One migration script: its id, the one it follows, and the first line of its docstring."""

    revision: str
    down_revision: str | None
    description: str


def history() -> list[Revision]:
    """Every migration, newest first (head first, down to the first one)."""
    scripts = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://unused/unused"))
    revisions = []
    for script in scripts.walk_revisions():
        down = script.down_revision
        if isinstance(down, tuple | list):  # a merge point: several parents
            down = ",".join(down)
        description = (script.doc or "").strip().splitlines()
        revisions.append(Revision(script.revision, down, description[0] if description else ""))
    return revisions


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema is against this release's migrations (`subsync db current` / `db check`)."""

    current: str | None
    head: str | None
    known: bool  # the current revision is one of this release's migrations (or there is none yet)

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    def problem(self) -> str | None:
        """Why a deploy should not go on with this database (None: it is at head)."""
        if self.at_head:
            return None
        if self.current is None:
            return f"the database has no schema (head is {self.head}): run `subsync db upgrade`"
        if not self.known:
            return (
                f"the database schema is at {self.current}, which this release does not know "
                f"(its head is {self.head}): a newer release migrated it"
            )
        return f"the database schema is at {self.current}, head is {self.head}: run `subsync db upgrade`"


def _state_of(current: str | None) -> SchemaState:
    known = current is None or any(r.revision == current for r in history())
    return SchemaState(current=current, head=head_revision(), known=known)


def schema_state(url: str) -> SchemaState:
    return _state_of(current_revision(url))


def schema_problem(conn: Connection) -> str | None:
    """Why the database on `conn` is not at this release's head (None: it is): what readiness and
    `subsync worker` check (docs/operations.md §4, §9)."""
    return _state_of(MigrationContext.configure(conn).get_current_revision()).problem()
