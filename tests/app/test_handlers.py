"""Event handlers of docs/sync.md §8.2-8.3 against a real database (no broker: publishing is captured)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine, select

from tests.builders import apply, document, fee, lines_json, usage
from worker.app.handlers import (
    InvoicesNotPublished,
    handle_invoice_created,
    handle_reconcile_subscription,
    handle_subscription_event,
)
from worker.app.invoicing import invoice_pending_lines
from worker.contract.events import InvoiceCreatedEvent, ReconcileRequest, SubscriptionEvent
from worker.errors import MissingInvoiceError, NotFoundError
from worker.store.subscriptions import delete_subscription
from worker.store.tables import invoices, subscription_sync_states

NS = "acme"
AS_OF = datetime(2024, 2, 15, tzinfo=UTC)
NOW = datetime(2024, 2, 15, 12, tzinfo=UTC)


def event(type_: str, as_of: datetime | None = AS_OF, subscription_id: str = "sub_1") -> SubscriptionEvent:
    return SubscriptionEvent.new(type_, namespace=NS, subscription_id=subscription_id, as_of=as_of, event_id="e")


def seed(engine: Engine, **kwargs: object) -> None:
    apply(engine, document(NS, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}, **kwargs))  # type: ignore[arg-type]


def test_created_syncs_then_invoices_and_publishes_invoice_created(db: Engine) -> None:
    seed(db)
    published: list[InvoiceCreatedEvent] = []
    handled = handle_subscription_event(db, event("subscription.created"), publish=published.append, now=NOW)

    assert handled.counts() == {"line_create": 3}  # Jan, Feb and (horizon = Mar 1) Mar
    assert handled.syncs[0].as_of == AS_OF
    assert len(handled.invoices) == 1 and len(handled.invoices[0].line_ids) == 2  # Jan and Feb are due
    assert [e.invoice_id for e in published] == [handled.invoices[0].id]
    assert published[0].as_of == AS_OF and published[0].namespace == NS
    lines = lines_json(db, NS)
    assert [(line["service_period"]["from"][:10], line["invoice_status"]) for line in lines] == [
        ("2024-01-01", "draft"),
        ("2024-02-01", "draft"),
        ("2024-03-01", "gathering"),
    ]


def test_invoices_whose_event_could_not_be_published_are_reported(db: Engine) -> None:
    """Invoicing committed; publishing failed: the error carries the events still owed."""
    seed(db)

    def broker_down(_: InvoiceCreatedEvent) -> None:
        raise redis.exceptions.ConnectionError("Redis is down")

    with pytest.raises(InvoicesNotPublished) as info:
        handle_subscription_event(db, event("subscription.created"), publish=broker_down, now=NOW)
    [owed] = info.value.events
    with db.connect() as conn:
        standard = conn.execute(select(invoices.c.id).where(invoices.c.type == "standard")).scalars().all()
    assert standard == [owed.invoice_id] and owed.as_of == AS_OF
    assert isinstance(info.value.cause, redis.exceptions.ConnectionError)


def test_the_same_event_twice_changes_nothing(db: Engine) -> None:
    seed(db)
    handle_subscription_event(db, event("subscription.updated"), now=NOW)
    before = lines_json(db, NS)
    again = handle_subscription_event(db, event("subscription.updated"), now=NOW)
    assert again.counts() == {} and again.invoices == ()
    assert lines_json(db, NS) == before


def test_invoicing_can_be_switched_off(db: Engine) -> None:
    seed(db)
    handled = handle_subscription_event(db, event("subscription.created"), invoice_after_sync=False, now=NOW)
    assert handled.invoices == ()
    assert {line["invoice_status"] for line in lines_json(db, NS)} == {"gathering"}


def test_cancelled_syncs_up_to_the_stored_end(db: Engine) -> None:
    seed(db, active_to="2024-06-10T00:00:00Z")
    handled = handle_subscription_event(db, event("subscription.cancelled", as_of=None), now=NOW)
    assert handled.syncs[0].as_of == datetime(2024, 6, 10, tzinfo=UTC)
    lines = lines_json(db, NS)
    assert [line["service_period"]["to"] for line in lines][-1] == "2024-06-10T00:00:00Z"
    assert len(lines) == 6
    # invoiced as of now (no override): only what is due on Feb 15
    assert [line["invoice_status"] for line in lines] == ["draft", "draft"] + ["gathering"] * 4


def test_cancelled_without_an_end_syncs_at_now(db: Engine) -> None:
    seed(db)
    handled = handle_subscription_event(db, event("subscription.cancelled", as_of=None), now=NOW)
    assert handled.syncs[0].as_of == NOW


def test_the_event_as_of_overrides_the_cancellation_end(db: Engine) -> None:
    seed(db, active_to="2024-06-10T00:00:00Z")
    handled = handle_subscription_event(db, event("subscription.cancelled"), now=NOW)
    assert handled.syncs[0].as_of == AS_OF


def test_deleted_removes_the_lines_and_does_not_invoice(db: Engine) -> None:
    seed(db)
    handle_subscription_event(db, event("subscription.created"), invoice_after_sync=False, now=NOW)
    with db.begin() as conn:
        delete_subscription(conn, NS, "sub_1", datetime(2024, 2, 10, tzinfo=UTC))
    handled = handle_subscription_event(db, event("subscription.deleted"), now=NOW)
    assert handled.counts() == {"line_delete": 3} and handled.invoices == ()
    assert lines_json(db, NS) == []
    with db.connect() as conn:
        state = conn.execute(select(subscription_sync_states).where(subscription_sync_states.c.namespace == NS)).one()
    assert state.has_billables is False and state.next_sync_after is None


def test_an_event_of_a_deleted_subscription_does_not_invoice(db: Engine) -> None:
    seed(db)
    with db.begin() as conn:
        delete_subscription(conn, NS, "sub_1", datetime(2024, 2, 10, tzinfo=UTC))
    handled = handle_subscription_event(db, event("subscription.updated"), now=NOW)
    assert handled.syncs[0].subscription_deleted and handled.invoices == ()


def test_an_unknown_subscription_is_a_domain_error(db: Engine) -> None:
    with pytest.raises(NotFoundError):
        handle_subscription_event(db, event("subscription.created", subscription_id="nope"), now=NOW)
    with pytest.raises(NotFoundError):
        handle_subscription_event(db, event("subscription.cancelled", as_of=None, subscription_id="nope"), now=NOW)


def test_invoice_created_resyncs_the_subscriptions_on_that_invoice(db: Engine) -> None:
    seed(db)
    apply(db, document(NS, {"api": [usage("it_api", "0.1", "2024-01-01T00:00:00Z")]}, subscription_id="sub_2"))
    handle_subscription_event(
        db, event("subscription.created", subscription_id="sub_2"), invoice_after_sync=False, now=NOW
    )
    published: list[InvoiceCreatedEvent] = []
    handle_subscription_event(db, event("subscription.created"), publish=published.append, now=NOW)
    # invoicing is per customer: sub_2's due usage line went onto the same invoice as sub_1's fees
    handled = handle_invoice_created(db, published[0], now=NOW)
    assert [r.subscription_id for r in handled.syncs] == ["sub_1", "sub_2"]
    assert all(r.as_of == AS_OF for r in handled.syncs)  # the override travels with invoice.created
    assert handled.counts() == {} and handled.customer_id == "cust_1"


def test_invoice_created_ignores_gathering_invoices(db: Engine) -> None:
    seed(db)
    handle_subscription_event(db, event("subscription.created"), invoice_after_sync=False, now=NOW)
    with db.connect() as conn:
        gathering = conn.execute(select(invoices.c.id).where(invoices.c.namespace == NS)).scalar_one()
    handled = handle_invoice_created(
        db, InvoiceCreatedEvent.new(namespace=NS, invoice_id=gathering, event_id="e"), now=NOW
    )
    assert handled.syncs == () and handled.skipped == "gathering invoice"


def test_invoice_created_for_a_missing_invoice_is_a_domain_error(db: Engine) -> None:
    with pytest.raises(MissingInvoiceError):
        handle_invoice_created(db, InvoiceCreatedEvent.new(namespace=NS, invoice_id="inv_missing"), now=NOW)


def test_invoice_created_does_not_cross_namespaces(db: Engine) -> None:
    seed(db)
    published: list[InvoiceCreatedEvent] = []
    handle_subscription_event(db, event("subscription.created"), publish=published.append, now=NOW)
    with pytest.raises(MissingInvoiceError):
        handle_invoice_created(
            db, InvoiceCreatedEvent.new(namespace="other", invoice_id=published[0].invoice_id), now=NOW
        )


def test_reconcile_subscription_syncs_at_now_without_invoicing(db: Engine) -> None:
    seed(db)
    handled = handle_reconcile_subscription(db, ReconcileRequest(namespace=NS, subscription_id="sub_1"), now=NOW)
    assert handled.syncs[0].as_of == NOW and handled.invoices == ()
    assert {line["invoice_status"] for line in lines_json(db, NS)} == {"gathering"}


# --- the after-sync invoicing is skipped only when it certainly bills nothing (docs/sync.md §8.3) ---


def test_a_due_line_of_another_subscription_of_the_customer_is_still_invoiced(db: Engine) -> None:
    """docs/sync.md §8.3 invoices the customer: an event on A must invoice B's due line, though A has none."""
    apply(db, document(NS, {"fee": [fee("it_b", "100", "2024-01-01T00:00:00Z")]}, subscription_id="sub_b"))
    handle_subscription_event(db, event("subscription.created", subscription_id="sub_b"), invoice_after_sync=False)
    apply(db, document(NS, {"fee": [fee("it_a", "50", "2024-03-01T00:00:00Z")]}, subscription_id="sub_a", start="2024-03-01T00:00:00Z"))  # fmt: skip
    handled = handle_subscription_event(db, event("subscription.created", subscription_id="sub_a"), now=NOW)

    assert handled.syncs[0].maybe_due is True
    [invoice] = handled.invoices
    due = [line["id"] for line in lines_json(db, NS) if line["subscription"]["subscription_id"] == "sub_b" and line["invoice_status"] == "draft"]  # fmt: skip
    assert sorted(invoice.line_ids) == sorted(due) and len(due) == 2  # B's January and February


def test_invoicing_is_skipped_only_when_it_would_bill_nothing(db: Engine) -> None:
    apply(db, document(NS, {"fee": [fee("it_a", "50", "2024-03-01T00:00:00Z")]}, start="2024-03-01T00:00:00Z"))
    handled = handle_subscription_event(db, event("subscription.created"), now=NOW)
    assert handled.syncs[0].maybe_due is False and handled.invoices == ()
    assert invoice_pending_lines(db, NS, "cust_1", as_of=AS_OF, now=NOW) == []  # what the skipped step would do
    # One second before the line's invoice_at it is still not due; at invoice_at it is (docs/sync.md §9 step 2).
    march = datetime(2024, 3, 1, tzinfo=UTC)
    for as_of, due in ((march - timedelta(microseconds=1), False), (march, True)):
        handled = handle_subscription_event(db, event("subscription.updated", as_of=as_of), now=NOW)
        assert handled.syncs[0].maybe_due is due and len(handled.invoices) == int(due)
