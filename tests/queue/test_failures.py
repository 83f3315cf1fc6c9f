"""The failure policy: reasons, and how many times each kind is retried."""

from __future__ import annotations

import psycopg
import pytest
import redis
from dramatiq.middleware import Shutdown, TimeLimitExceeded
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy import exc as sa_exc

from worker.app.handlers import InvoicesNotPublished
from worker.contract.events import InvalidEvent
from worker.domain.errors import PlanningError, TargetTooLargeError
from worker.errors import MissingInvoiceError, NotFoundError, SubsyncError
from worker.queue.failures import ActorFailed, FailureKind, RetryPolicy, classify, describe, kind_of
from worker.store.apply import GatheringInvoiceConflict
from worker.store.locks import lock_customer


def wrapped(orig: Exception) -> sa_exc.DBAPIError:
    return sa_exc.OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("exc", "reason", "kind"),
    [
        (InvalidEvent(["namespace: bad"]), "invalid_payload", FailureKind.invalid),
        (wrapped(psycopg.errors.SerializationFailure("could not serialize")), "serialization_failure", "transient"),
        (wrapped(psycopg.errors.DeadlockDetected("deadlock detected")), "deadlock", "transient"),
        (wrapped(psycopg.errors.LockNotAvailable("lock timeout")), "lock_timeout", "transient"),
        (wrapped(psycopg.errors.QueryCanceled("statement timeout")), "statement_timeout", "transient"),
        (wrapped(psycopg.errors.AdminShutdown("terminating connection")), "database_unavailable", "transient"),
        (wrapped(psycopg.OperationalError("connection refused")), "database_unavailable", "transient"),
        (redis.exceptions.ConnectionError("lost"), "broker_unavailable", "transient"),
        (GatheringInvoiceConflict("created concurrently"), "concurrent_write", "transient"),
        (Shutdown(), "shutdown", "transient"),
        (NotFoundError("subscription 'x' not found"), "not_found", "domain"),
        (MissingInvoiceError("invoice 'x' not found"), "missing_invoice", "domain"),
        (PlanningError("cannot plan"), "domain_error", "domain"),
        (TargetTooLargeError("sub_1", 10), "target_too_large", FailureKind.invalid),
        (TimeLimitExceeded(), "time_limit", "domain"),
        (
            sa_exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key")),
            "database_error",
            "domain",
        ),
        (ZeroDivisionError("boom"), "unexpected", "domain"),
        (InvoicesNotPublished((), redis.exceptions.ConnectionError("lost")), "broker_unavailable", "transient"),
    ],
)
def test_classification(exc: BaseException, reason: str, kind: str) -> None:
    assert classify(exc) == reason
    assert kind_of(reason) == kind
    assert classify(ActorFailed(exc)) == reason  # what an actor body raises is classified by its cause


def test_a_real_lock_timeout_is_transient(engine: Engine) -> None:
    other = create_engine(engine.url, poolclass=pool.NullPool)
    try:
        with engine.begin() as holder:
            lock_customer(holder, "acme", "cust_lock")
            with pytest.raises(sa_exc.DBAPIError) as info, other.begin() as waiter:
                lock_customer(waiter, "acme", "cust_lock", timeout="50ms")
        assert classify(info.value) == "lock_timeout"
        assert "lock timeout" in describe(info.value)
    finally:
        other.dispose()


def test_an_unreachable_database_is_transient() -> None:
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", poolclass=pool.NullPool)
    with pytest.raises(sa_exc.OperationalError) as info, dead.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert classify(info.value) == "database_unavailable"


def test_describe_is_one_line_and_names_unexpected_types() -> None:
    assert describe(ZeroDivisionError("a\n  b")) == "ZeroDivisionError: a b"
    assert describe(NotFoundError("subscription 'x' not found")) == "subscription 'x' not found"
    assert len(describe(ValueError("x" * 5000))) == 1000


def test_retry_policy_by_kind() -> None:
    policy = RetryPolicy(transient_max_retries=5, domain_max_retries=2)
    assert not policy.should_retry(0, "invalid_payload")
    assert [policy.should_retry(n, "lock_timeout") for n in range(7)] == [True] * 5 + [False] * 2
    assert [policy.should_retry(n, "not_found") for n in range(4)] == [True, True, False, False]
    assert policy.retry_when(0, InvalidEvent(["bad"])) is False
    assert policy.retry_when(1, wrapped(psycopg.errors.SerializationFailure("x"))) is True


KNOWN_REASONS = {"invalid_payload", "not_found", "missing_invoice", "concurrent_write", "invalid_subscription"}


def test_every_project_error_carries_a_known_reason_and_an_exit_code() -> None:
    import importlib
    import pkgutil

    import worker

    for module in pkgutil.walk_packages(worker.__path__, "worker."):  # every error type defined
        if not module.name.startswith("worker.migrations"):
            importlib.import_module(module.name)

    def subclasses(cls: type[SubsyncError]) -> list[type[SubsyncError]]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    types = subclasses(SubsyncError)
    assert {t.__name__ for t in types} >= {"NotFoundError", "InvalidEvent", "DocumentError", "GatheringInvoiceConflict"}
    for error_type in types:
        assert kind_of(error_type.reason) in set(FailureKind), error_type
        assert error_type.reason == "unexpected" or error_type.reason in KNOWN_REASONS, error_type
        assert error_type.exit_code in (1, 2), error_type
        assert classify(error_type.__new__(error_type)) == error_type.reason
