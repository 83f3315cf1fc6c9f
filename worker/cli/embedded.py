"""`subsync embedded status|stop`: the embedded Postgres and Redis that `demo`, the tests and every command
start when DATABASE_URL / REDIS_URL are unset keep running afterwards (for the next command); these show
and stop them (`worker.infra.embedded`, docs/operations.md)."""

import typer

from worker.cli.output import Column, FormatOption, emit, print_table
from worker.cli.runtime import get_runtime

app = typer.Typer(help="The embedded Postgres and Redis (used when DATABASE_URL / REDIS_URL are unset).")


@app.command("status")
def embedded_status(ctx: typer.Context, fmt: FormatOption = None) -> None:
    """Show whether the embedded servers under SUBSYNC_HOME run (starts nothing, connects nowhere)."""
    # lazy: the embedded servers' helpers import SQLAlchemy's URL type
    from worker.infra.embedded import server_status

    settings = get_runtime(ctx).settings
    servers = server_status(settings.home_path)
    data = {"home": str(settings.home_path), "servers": servers}

    def table() -> None:
        rows = [
            [s["server"], "running" if s["running"] else "stopped", s["pid"] or "-", s.get("data_dir") or s["socket"]]
            for s in servers
        ]
        columns = [Column("server"), Column("state"), Column("pid", "number"), Column("where", "id")]
        unused = [
            name
            for name, embedded in (
                ("database", settings.uses_embedded_database),
                ("broker", settings.uses_embedded_redis),
            )
            if not embedded
        ]
        caption = f"not used by this environment: the {' and '.join(unused)} (set by URL)" if unused else None
        print_table(f"embedded servers under {settings.home_path}", columns, rows, caption=caption)

    emit(fmt, data, table=table)


@app.command("stop")
def embedded_stop(ctx: typer.Context, fmt: FormatOption = None) -> None:
    """Stop the embedded Postgres and Redis under SUBSYNC_HOME (the next command starts them again)."""
    # lazy: the embedded servers' helpers import SQLAlchemy's URL type
    from worker.infra.embedded import stop_postgres, stop_redis

    home = get_runtime(ctx).settings.home_path
    stopped = {"postgres": stop_postgres(home), "redis": stop_redis(home)}
    data = {"home": str(home), "stopped": stopped}

    def table() -> None:
        rows = [[name, "stopped" if done else "was not running"] for name, done in stopped.items()]
        print_table(f"embedded servers under {home}", [Column("server"), Column("result")], rows)

    emit(fmt, data, table=table)
