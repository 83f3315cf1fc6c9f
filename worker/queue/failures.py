"""Failure policy of the worker: what went wrong (a short `reason`) and whether to try again.

Reasons are of three kinds (docs/operations.md §6): `invalid` ones are never retried, `transient` ones
are retried with backoff up to `transient_max_retries` times, `domain` ones `domain_max_retries` times
(the data may be fixed meanwhile). The project's errors carry their reason (`worker.errors`).

An actor body wraps what it raises in `ActorFailed` (except what it `throws`: invalid payloads); that
subclasses Dramatiq's `Retry`, so Dramatiq does not log a second traceback: the failure is logged once,
with its reason, by `worker.queue.middleware.message_log`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import redis.exceptions
from dramatiq.errors import ActorNotFound, Retry
from dramatiq.middleware import Shutdown, SkipMessage, TimeLimitExceeded
from sqlalchemy import exc as sa_exc

from worker.config import Settings
from worker.domain.errors import DomainError, TargetTooLargeError
from worker.errors import SubsyncError


class FailureKind(StrEnum):
    invalid = "invalid"
    transient = "transient"
    domain = "domain"


INVALID_PAYLOAD = "invalid_payload"
#: A message whose envelope (queue, actor, options, ids) no worker can honour (`worker.queue.consumer`).
INVALID_ENVELOPE = "invalid_envelope"

#: Message option where an attempt records its classified failure (reason, error, attempt).
FAILURE_OPTION = "subsync_failure"

_KIND_BY_REASON: dict[str, FailureKind] = {
    INVALID_PAYLOAD: FailureKind.invalid,
    INVALID_ENVELOPE: FailureKind.invalid,
    "unknown_actor": FailureKind.invalid,
    "max_age_exceeded": FailureKind.invalid,
    "target_too_large": FailureKind.invalid,  # the same data gives the same size: retrying cannot help
    "invalid_subscription": FailureKind.invalid,  # a stored subscription breaks a docs/contract.md §3 structural rule
    "serialization_failure": FailureKind.transient,
    "deadlock": FailureKind.transient,
    "lock_timeout": FailureKind.transient,
    "statement_timeout": FailureKind.transient,
    "database_unavailable": FailureKind.transient,
    "broker_unavailable": FailureKind.transient,
    "concurrent_write": FailureKind.transient,
    "shutdown": FailureKind.transient,
    "domain_error": FailureKind.domain,
    "not_found": FailureKind.domain,
    "missing_invoice": FailureKind.domain,
    "database_error": FailureKind.domain,
    "time_limit": FailureKind.domain,
    "unexpected": FailureKind.domain,
}

#: SQLSTATEs that say "try again": serialization failure, deadlock, lock not available, query
#: cancelled (statement/lock timeout), too many connections, admin/crash shutdown, cannot connect now.
_TRANSIENT_SQLSTATES = {
    "40001": "serialization_failure",
    "40P01": "deadlock",
    "55P03": "lock_timeout",
    "57014": "statement_timeout",
    "53300": "database_unavailable",
    "57P01": "database_unavailable",
    "57P02": "database_unavailable",
    "57P03": "database_unavailable",
}


class ActorFailed(Retry):
    """What an actor body raises when handling failed: `cause` is the exception, classified by the
    middleware and the retry policy (Dramatiq logs a `Retry` without a traceback)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(describe(cause))
        self.cause = cause


def kind_of(reason: str) -> FailureKind:
    return _KIND_BY_REASON.get(reason, FailureKind.domain)


#: The reasons of exceptions that are not the project's own (those carry their `reason`), by type:
#: the most specific class of an exception's MRO found here wins.
_REASON_BY_TYPE: dict[type[BaseException], str] = {
    TimeLimitExceeded: "time_limit",
    Shutdown: "shutdown",
    SkipMessage: "max_age_exceeded",
    ActorNotFound: "unknown_actor",
    TargetTooLargeError: "target_too_large",  # the same data gives the same size: retrying cannot help
    DomainError: "domain_error",
    sa_exc.TimeoutError: "database_unavailable",  # connection pool exhausted
    sa_exc.SQLAlchemyError: "database_error",
    redis.exceptions.ConnectionError: "broker_unavailable",
    redis.exceptions.TimeoutError: "broker_unavailable",
    ConnectionError: "database_unavailable",
    TimeoutError: "database_unavailable",
}


def classify(exc: BaseException) -> str:
    """The reason for an exception raised while handling a message."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):  # a wrapper (ActorFailed, InvoicesNotPublished) means its cause
        return classify(cause)
    if isinstance(exc, SubsyncError):
        return exc.reason
    if isinstance(exc, sa_exc.DBAPIError):  # by the server's SQLSTATE
        return _classify_database_error(exc)
    return next((_REASON_BY_TYPE[t] for t in type(exc).__mro__ if t in _REASON_BY_TYPE), "unexpected")


def _classify_database_error(exc: sa_exc.DBAPIError) -> str:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        if sqlstate in _TRANSIENT_SQLSTATES:
            return _TRANSIENT_SQLSTATES[sqlstate]
        if sqlstate.startswith("08"):  # connection exception
            return "database_unavailable"
    if exc.connection_invalidated:
        return "database_unavailable"
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) and sqlstate is None:
        return "database_unavailable"  # no server answer at all: lost or refused connection
    return "database_error"


def describe(exc: BaseException, limit: int = 1000) -> str:
    """One line for logs and the dead-letter list."""
    if isinstance(exc, ActorFailed):
        return describe(exc.cause, limit)
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        text = str(exc.orig)
    else:
        text = str(exc)
    text = " ".join(text.split())
    if not text:
        text = type(exc).__name__
    elif classify(exc) == "unexpected":
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times each kind of failure is retried (`retries` counts earlier failures)."""

    transient_max_retries: int = 10
    domain_max_retries: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.transient_max_retries, settings.domain_max_retries)

    def max_retries(self, reason: str) -> int:
        kind = kind_of(reason)
        if kind is FailureKind.invalid:
            return 0
        if kind is FailureKind.transient:
            return self.transient_max_retries
        return self.domain_max_retries

    def should_retry(self, retries: int, reason: str) -> bool:
        return retries < self.max_retries(reason)

    def retry_when(self, retries: int, exception: BaseException) -> bool:
        """Dramatiq's `Retries(retry_when=...)` predicate."""
        return self.should_retry(retries, classify(exception))
