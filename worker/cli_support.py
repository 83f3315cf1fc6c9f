"""Shared plumbing for `worker.cli` commands: runtime (settings, URLs, engine), output, options, errors.

Adding a command (see worker/cli.py for examples)::

    @app.command("thing")                       # or some_group_app.command(...)
    def thing(ctx: typer.Context, namespace: NamespaceOption, fmt: FormatOption = None) -> None:
        runtime = get_runtime(ctx)
        with runtime.engine().begin() as conn:
            data = ...
        emit(fmt, data, table=lambda: print_table(...))

Raise `SubsyncError` subclasses (exit 1), `InvalidInputError`/`DocumentError` (exit 2) or let
database/broker errors propagate: the root group turns every exception into one `error: ...`
line on stderr and the right exit code. Never print tracebacks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from typer.core import TyperGroup

from worker.config import Settings, describe_url
from worker.documents import DocumentError, format_validation_error, is_valid_id
from worker.errors import SubsyncError
from worker.formatting import parse_time
from worker.logging import get_logger

log = get_logger("worker.cli")

# --- runtime -----------------------------------------------------------------------------------


class Runtime:
    """What a command runs against. URLs and the engine are resolved lazily, so a command
    that needs no database never starts the embedded one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._database_url: str | None = None
        self._broker_url: str | None = None
        self._engine: Engine | None = None

    def describe(self) -> dict[str, str]:
        """Where the database and the broker are (host and database only), without connecting."""
        settings = self.settings
        if settings.database_url is None:
            database = f"embedded postgres in {settings.home_path / 'postgres'}, database subsync"
        else:
            database = describe_url(settings.database_url)
        if settings.redis_url is None:
            broker = f"embedded redis in {settings.home_path / 'redis'}"
        else:
            broker = describe_url(settings.redis_url)
        return {"database": database, "broker": broker}

    def announce(self, command: str) -> None:
        """The one line every command prints: which database and broker it uses."""
        log.info(f"subsync {command}".strip(), **self.describe())

    def database_url(self, *, migrate_embedded: bool = True) -> str:
        """The database URL; an embedded database is started and migrated to head first."""
        if self._database_url is None:
            from worker.db import resolve_database_url

            url = resolve_database_url(self.settings)
            if migrate_embedded and self.settings.uses_embedded_database:
                from worker import migrate

                migrate.upgrade(url)
            self._database_url = url
        return self._database_url

    def engine(self) -> Engine:
        if self._engine is None:
            from worker.db import make_engine

            self._engine = make_engine(self.database_url(), pool_size=2, max_overflow=2)
        return self._engine

    def broker_url(self) -> str:
        """`REDIS_URL`, or the URL of the embedded Redis (started if needed)."""
        if self._broker_url is None:
            if self.settings.redis_url is not None:
                self._broker_url = self.settings.redis_url
            else:
                from worker.embedded import ensure_redis

                self._broker_url = ensure_redis(self.settings.home_path)
        return self._broker_url

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def get_runtime(ctx: typer.Context) -> Runtime:
    """The Runtime created by the root callback for this invocation."""
    runtime = ctx.find_root().obj
    if not isinstance(runtime, Runtime):
        raise RuntimeError("the subsync root callback did not run")
    return runtime


# --- output ------------------------------------------------------------------------------------


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


FormatOption = Annotated[
    OutputFormat | None,
    typer.Option("--format", help="table or json (default: table on a terminal, json otherwise)."),
]


def resolve_format(fmt: OutputFormat | None) -> OutputFormat:
    if fmt is not None:
        return fmt
    return OutputFormat.table if _isatty(sys.stdout) else OutputFormat.json


def print_json(data: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    # Off a terminal rich assumes 80 columns; give piped tables room instead of folding ids.
    width = None if _isatty(sys.stdout) else 240
    Console(file=sys.stdout, soft_wrap=False, width=width).print(table)


def print_renderable(renderable: Any) -> None:
    """Print a rich renderable (a table built elsewhere) like `print_table` does."""
    width = None if _isatty(sys.stdout) else 240
    Console(file=sys.stdout, soft_wrap=False, width=width).print(renderable)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def emit(fmt: OutputFormat | None, data: Any, *, table: Callable[[], None]) -> None:
    """Print `data` as JSON, or call `table()` to render it for people."""
    if resolve_format(fmt) is OutputFormat.json:
        print_json(data)
    else:
        table()


# --- option types ------------------------------------------------------------------------------


def parse_timestamp(value: str) -> datetime:
    """Typer parser for RFC 3339 options (`--at`, `--as-of`, `--deleted-at`); returns UTC."""
    try:
        return parse_time(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} {exc}") from None


def timestamp_option(*param_decls: str, help: str | None = None) -> Any:
    """An RFC 3339 option: `at: Annotated[datetime | None, timestamp_option("--at")] = None`."""
    return typer.Option(*param_decls, parser=parse_timestamp, metavar="TS", help=help)


def identifier_callback(value: str | None) -> str | None:
    """Typer callback checking namespace / id syntax (CONTRACT §3 limits)."""
    if value is not None and not is_valid_id(value):
        raise typer.BadParameter(
            f"{value!r} must be 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit"
        )
    return value


NamespaceOption = Annotated[
    str, typer.Option("--namespace", metavar="NS", help="Tenant namespace.", callback=identifier_callback)
]
IdOption = Annotated[str, typer.Option("--id", metavar="ID", callback=identifier_callback)]


# --- errors ------------------------------------------------------------------------------------


def _is_framework_exception(exc: BaseException) -> bool:
    """typer/click control flow (usage errors, Exit, Abort) passes through untouched."""
    if isinstance(exc, typer.Exit | typer.Abort):
        return True
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def error_report(exc: BaseException) -> tuple[int, list[str]]:
    """Exit code and message lines for an exception raised by a command."""
    if isinstance(exc, DocumentError):
        return 2, exc.lines()
    if isinstance(exc, ValidationError):
        return 2, format_validation_error(exc)
    if isinstance(exc, SubsyncError):
        return exc.exit_code, [str(exc)]
    from worker.embedded import EmbeddedServerError

    if isinstance(exc, EmbeddedServerError):
        return 1, [str(exc)]
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return 1, [f"database unavailable: {_first_line(exc.orig)}"]
    if isinstance(exc, sa_exc.IntegrityError):
        return 1, [f"database rejected the write: {_first_line(exc.orig)}"]
    if isinstance(exc, sa_exc.DBAPIError):
        return 1, [f"database error: {_first_line(exc.orig)}"]
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return 1, [f"database error: {_first_line(exc)}"]
    import redis.exceptions

    if isinstance(exc, redis.exceptions.RedisError):
        return 1, [f"broker error: {_first_line(exc)}"]
    if isinstance(exc, OSError):
        return 1, [_first_line(exc)]
    from worker.domain.errors import DomainError

    # Domain and lookup/value errors carry messages written for people; other types are bugs.
    if isinstance(exc, DomainError | LookupError | ValueError) and not isinstance(
        exc, KeyError | IndexError | UnicodeError
    ):
        return 1, [_first_line(exc)]
    return 1, [f"unexpected {type(exc).__name__}: {_first_line(exc)}"]


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def print_error_lines(lines: Sequence[str]) -> None:
    for line in lines:
        sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()


COMMAND_WORDS_KEY = "subsync.command_words"


class SubsyncGroup(TyperGroup):
    """Root command group: turns any exception from a command into `error: ...` lines + exit code."""

    def invoke(self, ctx: Any) -> Any:
        # Remember the leading words (`subscriptions get`) for the root callback's log line.
        pending = [*(getattr(ctx, "_protected_args", None) or []), *ctx.args]
        words: list[str] = []
        for word in pending[:2]:
            if word.startswith("-"):
                break
            words.append(word)
        ctx.meta[COMMAND_WORDS_KEY] = words
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if _is_framework_exception(exc):
                raise
            code, lines = error_report(exc)
            log.debug("command failed", exc_info=exc)
            print_error_lines(lines)
            raise typer.Exit(code) from None
