"""Every exception of a command becomes `error: ...` lines on stderr and an exit code (never a traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions
import typer
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from typer.core import TyperGroup

from worker.config import Settings, environment_variable
from worker.contract.problems import Problem, format_validation_error, validation_problems
from worker.domain.errors import DomainError
from worker.errors import SubsyncError
from worker.infra.logging import get_logger

log = get_logger("worker.cli")


def _is_framework_exception(exc: BaseException) -> bool:
    """typer/click control flow (usage errors, Exit, Abort) passes through untouched."""
    return isinstance(exc, typer.Exit | typer.Abort | typer.TyperException)


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def _orig(exc: BaseException) -> object:
    """What the database driver said (SQLAlchemy wraps it)."""
    return getattr(exc, "orig", exc)


#: How exceptions that are not the project's own are reported (the project's carry their exit code
#: and lines: `SubsyncError.report`), by type: the most specific class of an exception's MRO found
#: here wins. `None`: a bug, reported as unexpected with its type. Domain, lookup and value errors
#: carry messages written for people.
_REPORTS: dict[type[BaseException], Callable[[BaseException], str] | None] = {
    sa_exc.OperationalError: lambda e: f"database unavailable: {_first_line(_orig(e))}",
    sa_exc.InterfaceError: lambda e: f"database unavailable: {_first_line(_orig(e))}",
    sa_exc.IntegrityError: lambda e: f"database rejected the write: {_first_line(_orig(e))}",
    sa_exc.DBAPIError: lambda e: f"database error: {_first_line(_orig(e))}",
    sa_exc.SQLAlchemyError: lambda e: f"database error: {_first_line(e)}",
    redis.exceptions.RedisError: lambda e: f"broker error: {_first_line(e)}",
    OSError: _first_line,
    DomainError: _first_line,
    LookupError: _first_line,
    ValueError: _first_line,
    KeyError: None,
    IndexError: None,
    UnicodeError: None,
}


def error_report(exc: BaseException) -> tuple[int, list[str]]:
    """Exit code and message lines for an exception raised by a command."""
    if isinstance(exc, SubsyncError):
        return exc.exit_code, exc.report()
    if isinstance(exc, ValidationError):  # a model of the contract or the settings: bad input
        if exc.title == Settings.__name__:  # name the environment variable, not the field
            return 2, [str(Problem(environment_variable(p.path), p.message)) for p in validation_problems(exc)]
        return 2, format_validation_error(exc)
    render = next((_REPORTS[t] for t in type(exc).__mro__ if t in _REPORTS), None)
    if render is None:
        return 1, [f"unexpected {type(exc).__name__}: {_first_line(exc)}"]
    return 1, [render(exc)]


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
