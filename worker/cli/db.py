"""`subsync db`: the database schema (Alembic migrations)."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.runtime import get_runtime
from worker.infra.logging import get_logger

log = get_logger("worker.cli")

app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Run migrations to head."""
    # lazy: Alembic costs ~0.2 s of start-up, paid only by the db commands
    from worker.store import migrations

    url = get_runtime(ctx).database_url(migrate_embedded=False)
    revision = migrations.upgrade(url)
    log.info("database schema is up to date", revision=revision)


@app.command("downgrade")
def db_downgrade(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", metavar="REV", help="Target revision ('base' drops everything).")],
) -> None:
    """Migrate down to a revision."""
    # lazy: Alembic costs ~0.2 s of start-up, paid only by the db commands
    from alembic.util.exc import CommandError

    from worker.errors import InvalidInputError
    from worker.store import migrations

    url = get_runtime(ctx).database_url(migrate_embedded=False)
    try:
        revision = migrations.downgrade(url, to)
    except CommandError as exc:  # an unknown or unreachable revision: bad usage, nothing was changed
        raise InvalidInputError(f"--to {to}: {exc}") from None
    log.info("database schema downgraded", revision=revision or "base")
