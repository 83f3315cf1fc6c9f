"""`OwedInvoiceEvents`: the `invoice.created` events an attempt committed but could not publish are kept
with the message (option `subsync_unpublished`), and the next attempt's actor publishes them first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine

from tests.builders import apply, document, fast_settings, fee
from worker.app.handlers import InvoicesNotPublished
from worker.bootstrap import actor_settings
from worker.contract.events import INVOICE_CREATED_ACTOR, QUEUE_NAME, InvoiceCreatedEvent, SubscriptionEvent
from worker.queue.actors import Actors, declare_actors
from worker.queue.failures import ActorFailed
from worker.queue.middleware.owed_invoice_events import (
    UNPUBLISHED_OPTION,
    OwedInvoiceEvents,
    take_owed_invoice_events,
)

NS = "acme"
OCCURRED_AT = datetime(2024, 2, 15, tzinfo=UTC)


def owed(invoice_id: str) -> InvoiceCreatedEvent:
    return InvoiceCreatedEvent.new(
        namespace=NS, invoice_id=invoice_id, event_id=f"{invoice_id}:created", occurred_at=OCCURRED_AT
    )


def message(options: dict[str, object]) -> dramatiq.Message[None]:
    return dramatiq.Message(queue_name=QUEUE_NAME, actor_name="subscription_event", args=(), kwargs={}, options=options)


@pytest.fixture
def stub() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.declare_queue(QUEUE_NAME)
    yield broker
    broker.close()


def test_the_actor_takes_the_owed_events_once_and_they_leave_the_message(stub: StubBroker) -> None:
    middleware = OwedInvoiceEvents()
    msg = message({UNPUBLISHED_OPTION: [owed("inv_1").payload(), owed("inv_2").payload()]})
    middleware.before_process_message(stub, msg)
    assert [e.invoice_id for e in take_owed_invoice_events()] == ["inv_1", "inv_2"]
    assert take_owed_invoice_events() == []  # taken once
    middleware.after_process_message(stub, msg)
    assert UNPUBLISHED_OPTION not in msg.options  # published: owed no more
    assert take_owed_invoice_events() == []  # nothing outside a message


def test_events_the_actor_did_not_take_stay_with_the_message(stub: StubBroker) -> None:
    middleware = OwedInvoiceEvents()
    payloads = [owed("inv_1").payload()]
    failed = message({UNPUBLISHED_OPTION: list(payloads)})
    middleware.before_process_message(stub, failed)
    middleware.after_process_message(stub, failed, exception=ActorFailed(RuntimeError("before publishing")))
    assert failed.options[UNPUBLISHED_OPTION] == payloads
    skipped = message({UNPUBLISHED_OPTION: list(payloads)})
    middleware.before_process_message(stub, skipped)
    middleware.after_skip_message(stub, skipped)
    assert skipped.options[UNPUBLISHED_OPTION] == payloads


def test_events_an_attempt_could_not_publish_are_owed_by_the_message(stub: StubBroker) -> None:
    middleware = OwedInvoiceEvents()
    msg = message({UNPUBLISHED_OPTION: [owed("inv_1").payload()]})
    middleware.before_process_message(stub, msg)
    take_owed_invoice_events()
    not_published = InvoicesNotPublished([owed("inv_1"), owed("inv_2")], ConnectionError("redis down"))
    middleware.after_process_message(stub, msg, exception=ActorFailed(not_published))
    assert msg.options[UNPUBLISHED_OPTION] == [owed("inv_1").payload(), owed("inv_2").payload()]


def test_the_subscription_event_actor_publishes_the_owed_events_first(db: Engine, stub: StubBroker) -> None:
    """The retry of an attempt that invoiced: the events it owes are published, then the event is synced."""
    apply(db, document(NS, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    actors: Actors = declare_actors(stub, actor_settings(fast_settings("stub")), engine=lambda: db)
    middleware = OwedInvoiceEvents()
    msg = message({UNPUBLISHED_OPTION: [owed("inv_owed").payload(), {"not": "an event"}]})
    event = SubscriptionEvent.new("subscription.created", namespace=NS, subscription_id="sub_1", event_id="e1")
    middleware.before_process_message(stub, msg)
    actors.subscription_event.fn(event.payload())
    middleware.after_process_message(stub, msg)
    published = [dramatiq.Message.decode(data) for data in list(stub.queues[QUEUE_NAME].queue)]
    assert {m.actor_name for m in published} == {INVOICE_CREATED_ACTOR}
    invoice_ids = [m.args[0]["invoice_id"] for m in published]
    # the owed event first (the invalid payload dropped), then those of the invoices this sync created
    assert invoice_ids[0] == "inv_owed" and len(invoice_ids) > 1 and "inv_owed" not in invoice_ids[1:]
    assert UNPUBLISHED_OPTION not in msg.options
