"""`subsync db`: the database schema (Alembic migrations)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from worker.cli.output import FormatOption, emit, print_table
from worker.cli.runtime import get_runtime
from worker.errors import SubsyncError
from worker.infra.logging import get_logger

log = get_logger("worker.cli")

app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Run migrations to head."""
    # lazy: Alembic costs ~0.2 s of start-up, paid only by the db commands
    from worker.store import migrations

    url = get_runtime(ctx).database_url(migrate_embedded=False)
    before = migrations.current_revision(url)
    revision = migrations.upgrade(url)
    log.info("database schema is up to date", revision=revision)
    # what was applied, printed whatever the log level (deploy logs need it: docs/operations.md §9)
    newest_first = migrations.history()
    ids = [r.revision for r in newest_first]
    start = ids.index(revision) if revision in ids else len(ids)
    end = ids.index(before) if before in ids else len(ids)
    for applied in reversed(newest_first[start:end]):
        typer.echo(f"applied migration {applied.revision}: {applied.description}")
    typer.echo(f"database schema at {revision} (head)")


@app.command("downgrade")
def db_downgrade(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", metavar="REV", help="Target revision ('base' drops everything).")],
    allow_data_loss: Annotated[
        bool,
        typer.Option(
            "--allow-data-loss",
            help="Drop the rows the downgrade removes (without it, a downgrade that would drop rows is refused).",
        ),
    ] = False,
) -> None:
    """Migrate down to a revision; refused (exit 1, listing the rows) when it would drop data, unless
    --allow-data-loss (docs/operations.md "Downgrades")."""
    # lazy: Alembic costs ~0.2 s of start-up, paid only by the db commands
    from alembic.util.exc import CommandError

    from worker.errors import InvalidInputError
    from worker.store import migrations

    url = get_runtime(ctx).database_url(migrate_embedded=False)
    try:
        revision = migrations.downgrade(url, to, allow_data_loss=allow_data_loss)
    except (CommandError, migrations.RevisionArgumentError) as exc:  # bad usage: nothing was changed
        raise InvalidInputError(f"--to {to!r}: {exc}") from None
    log.info("database schema downgraded", revision=revision or "base")


def _state(ctx: typer.Context) -> dict[str, Any]:
    # lazy: Alembic costs ~0.2 s of start-up, paid only by the db commands
    from worker.store import migrations

    state = migrations.schema_state(get_runtime(ctx).database_url(migrate_embedded=False))
    return {"current": state.current, "head": state.head, "at_head": state.at_head, "problem": state.problem()}


def _emit_state(fmt: Any, data: dict[str, Any]) -> None:
    shown = {k: v for k, v in data.items() if k != "problem"}
    emit(fmt, shown, table=lambda: print_table("database schema", ["", "value"], [[k, v] for k, v in shown.items()]))


@app.command("current")
def db_current(ctx: typer.Context, fmt: FormatOption = None) -> None:
    """Print the database's schema revision and this release's head."""
    _emit_state(fmt, _state(ctx))


@app.command("history")
def db_history(ctx: typer.Context, fmt: FormatOption = None) -> None:
    """List this release's migrations, newest first, marking the database's current one."""
    # lazy: Alembic costs ~0.2 s of start-up, paid only by the db commands
    from worker.store import migrations

    current = migrations.current_revision(get_runtime(ctx).database_url(migrate_embedded=False))
    rows = [
        {
            "revision": r.revision,
            "down_revision": r.down_revision,
            "description": r.description,
            "current": r.revision == current,
        }
        for r in migrations.history()
    ]
    emit(
        fmt,
        rows,
        table=lambda: print_table(
            "migrations (newest first)",
            ["revision", "follows", "description", "current"],
            [[r["revision"], r["down_revision"], r["description"], "*" if r["current"] else ""] for r in rows],
        ),
    )


@app.command("check")
def db_check(ctx: typer.Context, fmt: FormatOption = None) -> None:
    """Exit 0 when the schema is at head, else 1 saying why (for deploy pipelines)."""
    data = _state(ctx)
    if data["problem"] is not None:
        raise SubsyncError(data["problem"])
    _emit_state(fmt, data)
