"""Every exception of a command becomes `error: ...` lines on stderr and an exit code (never a traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from worker.domain.errors import DomainError
from worker.errors import SubsyncError


def _is_framework_exception(exc: BaseException) -> bool:
    """typer/click control flow (usage errors, Exit, Abort) passes through untouched."""
    return isinstance(exc, typer.Exit | typer.Abort | typer.TyperException)


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def _orig(exc: BaseException) -> object:
    """What the database driver said (SQLAlchemy wraps it)."""
    return getattr(exc, "orig", exc)


def _reports() -> dict[type[BaseException], Callable[[BaseException], str] | None]:
    """How exceptions that are not the project's own are reported (the project's carry their exit code
    and lines: `SubsyncError.report`), by type: the most specific class of an exception's MRO found
    here wins. `None`: a bug, reported as unexpected with its type. Domain, lookup and value errors
    carry messages written for people."""
    # lazy: the driver's and the broker's exception types, loaded only when a command failed
    import redis.exceptions
    from sqlalchemy import exc as sa_exc

    return {
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
    # lazy: pydantic and the settings, loaded only when a command failed
    from pydantic import ValidationError

    from worker.config import Settings, environment_variable
    from worker.contract.problems import Problem, format_validation_error, validation_problems

    if isinstance(exc, ValidationError):  # a model of the contract or the settings: bad input
        if exc.title == Settings.__name__:  # name the environment variable, not the field
            return 2, [str(Problem(environment_variable(p.path), p.message)) for p in validation_problems(exc)]
        return 2, format_validation_error(exc)
    reports = _reports()
    render = next((reports[t] for t in type(exc).__mro__ if t in reports), None)
    if render is None:
        return 1, [f"unexpected {type(exc).__name__}: {_first_line(exc)}"]
    return 1, [render(exc)]


def print_error_lines(lines: Sequence[str]) -> None:
    for line in lines:
        sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()


COMMAND_WORDS_KEY = "subsync.command_words"


def _plain_bool_flags() -> None:
    """Let flags (`--help`, `-v`, `--version`, typer's completion flags) bypass typer's pydantic coercion: a
    bool needs none, and building it imports pydantic (~0.1 s) before `subsync COMMAND --help` prints
    (issue 14). Uses typer's lazy `_runtime_param` hook; on a typer without it nothing changes."""
    try:
        from typer._coercion import PassThroughRuntimeParam
        from typer.core import _TyperParameter
    except ImportError:  # another typer: coercion as it comes
        return
    original = _TyperParameter.get_runtime_param
    if getattr(original, "subsync_plain_bools", False):
        return

    def get_runtime_param(self: Any) -> Any:
        descriptor: Any = getattr(self, "type_descriptor", None)
        if getattr(self, "_runtime_param", False) is None and getattr(descriptor, "annotation", None) is bool:
            self._runtime_param = PassThroughRuntimeParam(parameter_info=descriptor.parameter_info, annotation=bool)
        return original(self)

    get_runtime_param.subsync_plain_bools = True  # type: ignore[attr-defined]
    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]


_plain_bool_flags()


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
            # lazy: structlog (already loaded when a command ran)
            from worker.infra.logging import get_logger

            get_logger("worker.cli").debug("command failed", exc_info=exc)
            print_error_lines(lines)
            raise typer.Exit(code) from None
