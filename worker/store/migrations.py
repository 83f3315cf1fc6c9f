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
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from psycopg import sql
from sqlalchemy import Connection, create_engine, func, pool, select, table, text

from worker.errors import SubsyncError
from worker.infra.logging import get_logger
from worker.store.db import normalize_database_url

log = get_logger(__name__)

#: Postgres advisory lock held by every migration run (migrations/env.py): "subsync migrations".
MIGRATION_LOCK_KEY = 0x5B5_0C1A


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


class RevisionArgumentError(ValueError):
    """A downgrade target that is empty, unknown, or not below the current revision (bad usage, exit 2)."""


@dataclass(frozen=True)
class DroppedData:
    """Rows a downgrade would destroy: `what` (a table, or columns of one) and how many rows hold it."""

    what: str
    rows: int


class DataLossError(SubsyncError):
    """A downgrade refused because it would drop rows (docs/operations.md "Downgrades"); nothing was changed."""

    def __init__(self, target: str, dropped: list[DroppedData]) -> None:
        listed = ", ".join(f"{d.what} ({d.rows} row{'s' if d.rows != 1 else ''})" for d in dropped)
        super().__init__(
            f"downgrading to {target} would drop {listed}; nothing was changed. Export what you need first, "
            "then run it again with --allow-data-loss"
        )
        self.dropped = dropped


def _downgraded(conn: Connection, revision: str) -> list[Script]:
    """The migrations whose downgrade() going from the current revision to `revision` runs, newest first."""
    if not revision.strip():
        raise RevisionArgumentError("must name a revision (see `subsync db history`) or 'base'")
    scripts = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://unused/unused"))
    current = MigrationContext.configure(conn).get_current_revision()
    try:
        return list(scripts.iterate_revisions(current, revision, select_for_downgrade=True))
    except RevisionError as exc:
        raise RevisionArgumentError(str(exc)) from None


def _dropped_data(conn: Connection, scripts: list[Script]) -> list[DroppedData]:
    """What the downgrade() of `scripts` destroys, from each script's `DOWNGRADE_DROPS`: `(what, table, SQL
    condition of the rows that hold it)`. The tables are locked against writes until the transaction ends, so
    no row written after the count is dropped unseen."""
    dropped = []
    for script in scripts:
        for what, name, condition in getattr(script.module, "DOWNGRADE_DROPS", ()):
            # Names and conditions are constants of the migration scripts, never input.
            lock = sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(name))
            conn.exec_driver_sql(lock.as_string(conn.connection.driver_connection))
            rows = conn.execute(select(func.count()).select_from(table(name)).where(text(condition))).scalar_one()
            if rows:
                dropped.append(DroppedData(what, int(rows)))
    return dropped


def downgrade(url: str, revision: str, *, allow_data_loss: bool = False) -> str | None:
    """Migrate down to `revision` (`base` removes every table). Returns the new revision.

    Refuses with DataLossError (nothing changed) when the downgrade would drop rows, unless `allow_data_loss`;
    RevisionArgumentError for an empty, unknown or unreachable target. The check and the downgrade run in
    one transaction under the migration lock (docs/operations.md "Downgrades")."""
    engine = create_engine(normalize_database_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            before = MigrationContext.configure(conn).get_current_revision()
            dropped = _dropped_data(conn, _downgraded(conn, revision))
            if dropped and not allow_data_loss:
                raise DataLossError(revision, dropped)
            config = alembic_config(url)
            config.attributes["connection"] = conn  # migrations/env.py runs in this transaction
            command.downgrade(config, revision)
            after = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    if after != before:
        log.info("database migrated", from_revision=before, to_revision=after)
    if dropped:
        log.warning(
            "downgrade dropped data (--allow-data-loss)",
            to_revision=after,
            dropped={d.what: d.rows for d in dropped},
        )
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
