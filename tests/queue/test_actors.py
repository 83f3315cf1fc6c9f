"""Actor bodies and the failure policy in-process, on Dramatiq's StubBroker with a real database."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Shutdown
from sqlalchemy import Engine, select
from sqlalchemy import exc as sa_exc

from tests.builders import apply, document, fast_settings, fee, lines_json, store_unchecked
from worker.app.sync import sync_subscription
from worker.bootstrap import actor_settings
from worker.contract.events import QUEUE_NAME, SubscriptionEvent
from worker.infra.logging import configure_logging
from worker.queue.actors import Actors, declare_actors
from worker.queue.broker import build_middleware
from worker.queue.middleware.graceful_shutdown import GracefulShutdown
from worker.store.tables import charges, subscription_sync_states

NS = "acme"
AS_OF = datetime(2024, 2, 15, tzinfo=UTC)


class Harness:
    def __init__(self, engine: Callable[[], Engine], **settings: object) -> None:
        self.settings = fast_settings("stub", **settings)
        self.broker = StubBroker(middleware=build_middleware(self.settings))
        self.broker.emit_after("process_boot")
        self.actors: Actors = declare_actors(self.broker, actor_settings(self.settings), engine=engine)
        self.worker = dramatiq.Worker(self.broker, worker_timeout=20, worker_threads=2)

    def send(self, actor: dramatiq.Actor[..., Any], *args: Any) -> dramatiq.Message[Any]:
        return actor.send(*args)

    def drain(self) -> None:
        self.broker.join(QUEUE_NAME, fail_fast=False, timeout=20_000)
        self.worker.join()

    @property
    def dead(self) -> list[Any]:
        return self.broker.dead_letters


@pytest.fixture
def harness(db: Engine) -> Iterator[Harness]:
    h = Harness(lambda: db)
    h.worker.start()
    yield h
    h.worker.stop()
    h.broker.close()


def created(subscription_id: str = "sub_1") -> dict[str, Any]:
    return SubscriptionEvent.new(
        "subscription.created", namespace=NS, subscription_id=subscription_id, as_of=AS_OF, event_id="e1"
    ).payload()


def seed(engine: Engine) -> None:
    apply(engine, document(NS, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))


def test_a_subscription_event_is_synced_and_invoiced(db: Engine, harness: Harness) -> None:
    seed(db)
    harness.send(harness.actors.subscription_event, created())
    harness.drain()
    assert harness.dead == []
    lines = lines_json(db, NS)
    assert [line["invoice_status"] for line in lines] == ["draft", "draft", "gathering"]


def test_an_invalid_payload_is_dead_lettered_at_once(db: Engine, harness: Harness) -> None:
    seed(db)
    bad = {**created(), "namespace": "not/valid"}
    harness.send(harness.actors.subscription_event, bad)
    harness.drain()
    [dead] = harness.dead
    assert dead.options.get("retries", 0) == 0
    assert dead.options["subsync_failure"]["reason"] == "invalid_payload"
    assert "namespace" in dead.options["subsync_failure"]["error"]
    assert lines_json(db, NS) == []


def test_a_sync_over_the_line_limit_is_dead_lettered_at_once(db: Engine) -> None:
    seed(db)  # three monthly lines as of AS_OF
    harness = Harness(lambda: db, max_target_lines=2)  # SUBSYNC_MAX_TARGET_LINES=2
    harness.worker.start()
    try:
        harness.send(harness.actors.subscription_event, created())
        harness.drain()
    finally:
        harness.worker.stop()
        harness.broker.close()
    [dead] = harness.dead
    failure = dead.options["subsync_failure"]
    # one attempt, then dead-lettered: the same data would fail the same way, so it is not retried
    assert failure["attempt"] == 1 and dead.options["retries"] == 1
    assert failure["reason"] == "target_too_large" and "sub_1" in failure["error"] and "2" in failure["error"]
    assert lines_json(db, NS) == []


def test_a_stored_subscription_breaking_a_structural_rule_is_dead_lettered_at_once(
    db: Engine, harness: Harness
) -> None:
    seed(db)
    store_unchecked(db, NS, "sub_1", active_from=datetime(2023, 12, 1, tzinfo=UTC))  # before its first phase
    harness.send(harness.actors.subscription_event, created())
    harness.drain()
    [dead] = harness.dead
    failure = dead.options["subsync_failure"]
    # one attempt, never retried (docs/contract.md §3 structure): the stored data gives the same answer every time
    assert failure["attempt"] == 1 and dead.options["retries"] == 1
    assert failure["reason"] == "invalid_subscription" and "rule phase-coverage" in failure["error"]
    assert lines_json(db, NS) == []


def test_a_domain_error_is_retried_a_few_times_then_dead_lettered(db: Engine, harness: Harness) -> None:
    harness.send(harness.actors.subscription_event, created("missing"))
    harness.drain()
    [dead] = harness.dead
    assert dead.options["retries"] == harness.settings.domain_max_retries + 1
    assert dead.options["subsync_failure"]["reason"] == "not_found"


def test_a_transient_error_is_retried_until_it_succeeds(db: Engine) -> None:
    seed(db)
    failures = iter([sa_exc.OperationalError("SELECT", {}, psycopg.errors.SerializationFailure("conflict"))])

    def engine() -> Engine:
        for exc in failures:
            raise exc
        return db

    h = Harness(engine)
    h.worker.start()
    try:
        h.send(h.actors.subscription_event, created())
        h.drain()
    finally:
        h.worker.stop()
    assert h.dead == []
    assert len(lines_json(db, NS)) == 3


def test_a_message_over_its_time_limit_is_interrupted(db: Engine) -> None:
    def slow_engine() -> Engine:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.005)
        return db

    h = Harness(slow_engine, time_limit_seconds=0.1, domain_max_retries=0)
    h.worker.start()
    started = time.monotonic()
    try:
        h.send(h.actors.subscription_event, created())
        h.drain()
    finally:
        h.worker.stop()
    [dead] = h.dead
    assert dead.options["subsync_failure"]["reason"] == "time_limit"
    assert time.monotonic() - started < 3


def test_reconcile_due_enqueues_and_syncs_due_subscriptions(db: Engine, harness: Harness) -> None:
    seed(db)
    harness.send(harness.actors.reconcile_due)
    harness.drain()
    assert harness.dead == []
    with db.connect() as conn:
        state = conn.execute(select(subscription_sync_states)).one()
    assert state.subscription_id == "sub_1" and state.has_billables
    assert {line["invoice_status"] for line in lines_json(db, NS)} == {"gathering"}  # no invoicing


def test_reconcile_due_rejects_arguments(harness: Harness) -> None:
    harness.send(harness.actors.reconcile_due, ["nope"])
    harness.drain()
    [dead] = harness.dead
    assert dead.options["subsync_failure"]["reason"] == "invalid_payload"


def test_graceful_shutdown_interrupts_what_is_still_running_after_the_grace_period() -> None:
    middleware = GracefulShutdown(grace_seconds=0.05)
    outcome: list[str] = []
    ready = threading.Event()

    def busy() -> None:
        middleware.before_process_message(StubBroker(), None)  # this thread runs a message
        ready.set()
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.001)
            outcome.append("finished")
        except Shutdown:
            outcome.append("interrupted")

    thread = threading.Thread(target=busy)
    thread.start()
    ready.wait()
    started = time.monotonic()
    middleware.before_worker_shutdown(StubBroker(), None)
    thread.join(5)
    assert outcome == ["interrupted"]
    assert 0.04 <= time.monotonic() - started < 2


def test_an_actor_called_with_the_wrong_arguments_dead_letters_at_once(harness: Harness) -> None:
    harness.send(harness.actors.subscription_event, created(), "extra")
    harness.broker.enqueue(
        dramatiq.Message(queue_name=QUEUE_NAME, actor_name="invoice_created", args=(), kwargs={"x": 1}, options={})
    )
    harness.drain()
    reasons = sorted(d.options["subsync_failure"]["reason"] for d in harness.dead)
    assert reasons == ["invalid_payload", "invalid_payload"]
    assert all(d.options.get("retries", 0) == 0 for d in harness.dead)


def test_an_unexpected_exception_is_logged_once_with_its_traceback_and_message_id(
    db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken_engine() -> Engine:
        raise RuntimeError("no engine today")

    configure_logging("json")
    h = Harness(broken_engine, domain_max_retries=1)  # two attempts: each logs its own failure, once
    h.worker.start()
    try:
        sent = h.send(h.actors.subscription_event, created())
        h.drain()
    finally:
        h.worker.stop()
        h.broker.close()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    failed = [line for line in lines if line["event"] == "message.failed"]
    assert [(f["level"], f["reason"], f["message_id"], f["attempt"]) for f in failed] == [
        ("error", "unexpected", sent.message_id, 1),
        ("error", "unexpected", sent.message_id, 2),
    ]
    for line in failed:
        assert "Traceback (most recent call last)" in line["exception"]
        assert "in broken_engine" in line["exception"] and "RuntimeError: no engine today" in line["exception"]
    assert sum("Traceback" in json.dumps(line) for line in lines) == len(failed)  # no second copy


# --- advance_charges (docs/credits.md §2.5) ------------------------------------------------------------------


def seed_credit_only(engine: Engine, customer_id: str = "cust_1") -> None:
    items = {"platform-fee": [fee(f"it_{customer_id}", "100", "2024-01-01T00:00:00Z")]}
    doc = document(NS, items, customer_id=customer_id, subscription_id=f"sub_{customer_id}")
    doc["settlement_mode"] = "credit_only"
    apply(engine, doc)


def charge_statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {r.unique_reference_id: r.status for r in conn.execute(select(charges))}


def test_the_worker_advances_charges_after_a_credit_mode_sync(db: Engine, harness: Harness) -> None:
    seed_credit_only(db)
    event = SubscriptionEvent.new(
        "subscription.created", namespace=NS, subscription_id="sub_cust_1", as_of=AS_OF, event_id="e1"
    ).payload()
    harness.send(harness.actors.subscription_event, event)
    harness.drain()
    assert harness.dead == []
    statuses = charge_statuses(db)
    # as of 02-15 (horizon 03-01): period[0] and period[1] booked (their service starts passed), period[2] not due
    assert statuses == {
        "sub_cust_1/default/platform-fee/v[0]/period[0]": "final",
        "sub_cust_1/default/platform-fee/v[0]/period[1]": "final",
        "sub_cust_1/default/platform-fee/v[0]/period[2]": "created",
    }


def test_advance_charges_fans_out_then_advances_each_customer(db: Engine, harness: Harness) -> None:
    for customer_id in ("cust_a", "cust_b"):
        seed_credit_only(db, customer_id)
        sync_subscription(db, NS, f"sub_{customer_id}", as_of=AS_OF)
    assert set(charge_statuses(db).values()) == {"created"}
    harness.send(harness.actors.advance_charges)  # the scheduler's message: no argument
    harness.drain()
    assert harness.dead == []
    assert set(charge_statuses(db).values()) == {"final"}  # each per-customer message booked its charges (now)


def test_advance_charges_with_an_invalid_argument_is_dead_lettered(db: Engine, harness: Harness) -> None:
    harness.send(harness.actors.advance_charges, {"namespace": NS})
    harness.drain()
    assert len(harness.dead) == 1
