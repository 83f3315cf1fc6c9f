"""Event payloads (docs/contract.md §4): validation, unknown fields, and the message a producer sends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from worker.contract.events import (
    QUEUE_NAME,
    InvalidEvent,
    InvoiceCreatedEvent,
    SubscriptionEvent,
    make_event,
    parse_event,
    parse_invoice_created_event,
    parse_subscription_event,
)
from worker.queue.publish import event_message


def payload(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "subscription.updated",
        "namespace": "acme",
        "subscription_id": "sub_01",
        "event_id": "evt-1",
        "occurred_at": "2024-01-15T10:00:00+02:00",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def test_a_valid_event_is_parsed_with_times_in_utc_and_unknown_fields_ignored() -> None:
    event = parse_subscription_event(payload(as_of="2024-02-01T00:00:00Z", producer="billing-svc", extra={"a": 1}))
    assert event.type == "subscription.updated"
    assert event.occurred_at == datetime(2024, 1, 15, 8, tzinfo=UTC)
    assert event.as_of == datetime(2024, 2, 1, tzinfo=UTC)
    assert event.payload() == {
        "type": "subscription.updated",
        "namespace": "acme",
        "subscription_id": "sub_01",
        "event_id": "evt-1",
        "occurred_at": "2024-01-15T08:00:00Z",
        "as_of": "2024-02-01T00:00:00Z",
    }
    assert "as_of" not in parse_subscription_event(payload()).payload()


@pytest.mark.parametrize("type_", ["created", "updated", "cancelled", "continued", "deleted"])
def test_every_subscription_type_is_accepted(type_: str) -> None:
    assert parse_subscription_event(payload(type=f"subscription.{type_}")).type == f"subscription.{type_}"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"namespace": "acme/other"}, "namespace: must be 1-128 characters"),
        ({"namespace": ""}, "namespace: must be 1-128 characters"),
        ({"subscription_id": "x" * 129}, "subscription_id: must be 1-128 characters"),
        ({"subscription_id": ...}, "subscription_id: is required"),
        ({"event_id": ...}, "event_id: is required"),
        ({"event_id": "a\nb"}, "event_id: must not contain control characters"),
        ({"occurred_at": "2024-01-15 10:00"}, "occurred_at: must be an RFC 3339 time"),
        ({"as_of": "2024-01-15T10:00:00"}, "as_of: must be an RFC 3339 time"),
        ({"as_of": "0001-01-01T00:00:00Z"}, "as_of: must be in the years 1970-9998"),
        ({"type": "invoice.created"}, "type:"),
        ({"type": "subscription.paused"}, "type:"),
        ({"subscription_id": 42}, "subscription_id: must be a string"),
    ],
)
def test_invalid_payloads_name_the_field(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_subscription_event(payload(**changes))
    assert expected in str(info.value)


@pytest.mark.parametrize("value", [None, "subscription.created", 42, ["a"]])
def test_a_payload_that_is_not_an_object_is_invalid(value: object) -> None:
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        parse_subscription_event(value)


def test_invoice_created_events() -> None:
    raw = {
        "type": "invoice.created",
        "namespace": "acme",
        "invoice_id": "inv_1",
        "event_id": "e",
        "occurred_at": "2024-01-01T00:00:00Z",
    }
    event = parse_invoice_created_event(raw)
    assert isinstance(parse_event(raw), InvoiceCreatedEvent)
    assert event.invoice_id == "inv_1" and event.actor_name == "invoice_created"
    with pytest.raises(InvalidEvent, match="invoice_id: is required"):
        parse_invoice_created_event({k: v for k, v in raw.items() if k != "invoice_id"})
    with pytest.raises(InvalidEvent, match="type"):
        parse_event({**raw, "type": "invoice.paid"})


def test_make_event_checks_which_id_goes_with_the_type() -> None:
    event = make_event("subscription.created", namespace="acme", subscription_id="sub_01")
    assert isinstance(event, SubscriptionEvent) and event.event_id.startswith("evt_")
    with pytest.raises(InvalidEvent, match="takes a subscription id"):
        make_event("subscription.created", namespace="acme", invoice_id="inv_1")
    with pytest.raises(InvalidEvent, match="takes an invoice id"):
        make_event("invoice.created", namespace="acme", subscription_id="sub_01")
    with pytest.raises(InvalidEvent, match="unknown event type"):
        make_event("subscription.renamed", namespace="acme", subscription_id="sub_01")


def test_the_message_is_a_plain_dramatiq_message_on_the_contract_queue() -> None:
    event = SubscriptionEvent.new("subscription.deleted", namespace="acme", subscription_id="sub_01", event_id="e1")
    message = event_message(event)
    fields = message.asdict()
    assert fields["queue_name"] == QUEUE_NAME == "subscription-sync"
    assert fields["actor_name"] == "subscription_event"
    assert fields["args"] == (event.payload(),) and fields["kwargs"] == {} and fields["options"] == {}
    assert isinstance(fields["message_id"], str) and isinstance(fields["message_timestamp"], int)
