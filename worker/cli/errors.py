"""Every exception of a command becomes `error: ...` lines on stderr and an exit code (never a traceback)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import redis.exceptions
import typer
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from typer.core import TyperGroup

from worker.config import Settings, environment_variable
from worker.contract.problems import DocumentError, Problem, format_validation_error, validation_problems
from worker.domain.errors import DomainError
from worker.errors import SubsyncError
from worker.infra.embedded import EmbeddedServerError
from worker.infra.logging import get_logger

log = get_logger("worker.cli")


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
        if exc.title == Settings.__name__:  # name the environment variable, not the field
            return 2, [str(Problem(environment_variable(p.path), p.message)) for p in validation_problems(exc)]
        return 2, format_validation_error(exc)
    if isinstance(exc, SubsyncError):
        return exc.exit_code, [str(exc)]
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
    if isinstance(exc, redis.exceptions.RedisError):
        return 1, [f"broker error: {_first_line(exc)}"]
    if isinstance(exc, OSError):
        return 1, [_first_line(exc)]
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
