"""Event messages of the `subscription-sync` queue (docs/contract.md §4) and `publish(event)`.

An event is the single argument of a Dramatiq message: a JSON object with `type`, `namespace`,
`subscription_id` (or `invoice_id` for `invoice.created`), `event_id`, `occurred_at` and an optional
`as_of`. Unknown fields are ignored; anything else that is wrong makes the payload invalid, and the
worker dead-letters it at once (`InvalidEvent`). So is an event larger than `MAX_EVENT_BYTES` (64 KiB of
JSON) or nested deeper than `MAX_EVENT_DEPTH` (32), and a message larger than `MAX_MESSAGE_BYTES`
(1 MiB) is refused before it is even decoded.

Python producers::

    from worker.contract.events import SubscriptionEvent
    from worker.queue.publish import publish

    publish(SubscriptionEvent.new("subscription.updated", namespace="acme", subscription_id="sub_01"), broker=broker)

Producers in other languages write the same JSON into a Dramatiq message (docs/operations.md §8).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from worker.contract.fields import MAX_EVENT_ID_LENGTH as MAX_EVENT_ID_LENGTH
from worker.contract.fields import EventId, Identifier, Time
from worker.contract.problems import format_validation_error
from worker.errors import InvalidInputError
from worker.infra.clock import utcnow
from worker.infra.ids import new_id

#: The one queue of the worker (docs/contract.md §4).
QUEUE_NAME = "subscription-sync"

#: Actor names (docs/contract.md §4), plus the internal per-subscription actor used by `reconcile_due`.
SUBSCRIPTION_EVENT_ACTOR = "subscription_event"
INVOICE_CREATED_ACTOR = "invoice_created"
RECONCILE_DUE_ACTOR = "reconcile_due"
RECONCILE_SUBSCRIPTION_ACTOR = "reconcile_subscription"
ADVANCE_CHARGES_ACTOR = "advance_charges"  # docs/credits.md §2.5

SubscriptionEventType = Literal[
    "subscription.created",
    "subscription.updated",
    "subscription.cancelled",
    "subscription.continued",
    "subscription.deleted",
]
InvoiceEventType = Literal["invoice.created"]

SUBSCRIPTION_EVENT_TYPES: tuple[str, ...] = get_args(SubscriptionEventType)
INVOICE_EVENT_TYPES: tuple[str, ...] = get_args(InvoiceEventType)
EVENT_TYPES: tuple[str, ...] = SUBSCRIPTION_EVENT_TYPES + INVOICE_EVENT_TYPES

#: Limits of what the worker will even look at (a larger or deeper payload is invalid: dead-lettered
#: at once). An event is a handful of short fields; these leave room for a producer's extra fields.
#: The whole Dramatiq message, as stored in Redis, is checked before it is decoded
#: (`worker.queue.consumer.GuardedRedisConsumer`); the event argument is checked before it is validated.
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024
MAX_EVENT_DEPTH = 32


class InvalidEvent(InvalidInputError):
    """A message payload that is not a valid event; never retried (dead-lettered at once)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems or ["invalid event"]
        super().__init__("; ".join(self.problems))


# --- models ------------------------------------------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)

    namespace: Identifier
    event_id: EventId
    occurred_at: Time
    as_of: Time | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON object sent as the actor's argument (`as_of` omitted when unset)."""
        return self.model_dump(mode="json", exclude_none=True)

    def log_context(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "event_type": self.type, "namespace": self.namespace}

    if TYPE_CHECKING:
        type: str


class SubscriptionEvent(_Event):
    """`subscription.created|updated|cancelled|continued|deleted` → actor `subscription_event`."""

    type: SubscriptionEventType
    subscription_id: Identifier

    @classmethod
    def new(
        cls,
        type: str,
        *,
        namespace: str,
        subscription_id: str,
        as_of: datetime | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> SubscriptionEvent:
        """A validated event; `event_id` and `occurred_at` default to a new id and now."""
        return cls.model_validate(
            {
                "type": type,
                "namespace": namespace,
                "subscription_id": subscription_id,
                "event_id": event_id or new_id("evt"),
                "occurred_at": occurred_at or utcnow(),
                "as_of": as_of,
            }
        )

    @property
    def actor_name(self) -> str:
        return SUBSCRIPTION_EVENT_ACTOR

    def log_context(self) -> dict[str, Any]:
        return {**super().log_context(), "subscription_id": self.subscription_id}


class InvoiceCreatedEvent(_Event):
    """`invoice.created` → actor `invoice_created`."""

    type: InvoiceEventType
    invoice_id: Identifier

    @classmethod
    def new(
        cls,
        *,
        namespace: str,
        invoice_id: str,
        as_of: datetime | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> InvoiceCreatedEvent:
        return cls.model_validate(
            {
                "type": "invoice.created",
                "namespace": namespace,
                "invoice_id": invoice_id,
                "event_id": event_id or new_id("evt"),
                "occurred_at": occurred_at or utcnow(),
                "as_of": as_of,
            }
        )

    @property
    def actor_name(self) -> str:
        return INVOICE_CREATED_ACTOR

    def log_context(self) -> dict[str, Any]:
        return {**super().log_context(), "invoice_id": self.invoice_id}


class ReconcileRequest(BaseModel):
    """Argument of the internal `reconcile_subscription` actor (enqueued by `reconcile_due`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    namespace: Identifier
    subscription_id: Identifier
    requested_at: Time | None = None

    def payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def log_context(self) -> dict[str, Any]:
        return {"event_type": "reconcile", "namespace": self.namespace, "subscription_id": self.subscription_id}


Event = SubscriptionEvent | InvoiceCreatedEvent


# --- parsing -----------------------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def check_event_size(payload: object, what: str = "event") -> None:
    """Refuse a payload nested deeper than MAX_EVENT_DEPTH or larger than MAX_EVENT_BYTES as compact
    UTF-8 JSON (InvalidEvent), without recursing: the check itself is bounded by the limits."""
    stack: list[tuple[object, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list | tuple):
            if depth > MAX_EVENT_DEPTH:
                raise InvalidEvent([f"the {what} is nested deeper than {MAX_EVENT_DEPTH} levels"])
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    try:
        encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent([f"the {what} is not JSON: {exc}"]) from None
    size = len(encoded.encode("utf-8", errors="surrogatepass"))
    if size > MAX_EVENT_BYTES:
        raise InvalidEvent([f"the {what} is {size} bytes of JSON, over the limit of {MAX_EVENT_BYTES}"])


def _parse(model: type[_M], payload: object, what: str) -> _M:
    if not isinstance(payload, dict):
        raise InvalidEvent([f"the {what} must be a JSON object, got {_json_kind(payload)}"])
    check_event_size(payload, what)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(format_validation_error(exc)) from None


def parse_subscription_event(payload: object) -> SubscriptionEvent:
    """Validate the argument of `subscription_event`. Raises InvalidEvent with one problem per field."""
    return _parse(SubscriptionEvent, payload, "event")


def parse_invoice_created_event(payload: object) -> InvoiceCreatedEvent:
    """Validate the argument of `invoice_created`. Raises InvalidEvent."""
    return _parse(InvoiceCreatedEvent, payload, "event")


def parse_reconcile_request(payload: object) -> ReconcileRequest:
    return _parse(ReconcileRequest, payload, "request")


class AdvanceChargesRequest(BaseModel):
    """Argument of `advance_charges` for one customer (docs/credits.md §2.5); `as_of` defaults to now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: Identifier
    customer_id: Identifier
    as_of: Time | None = None
    event_id: EventId | None = None

    def payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def log_context(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": "advance_charges",
            "namespace": self.namespace,
            "customer_id": self.customer_id,
        }


def parse_advance_charges(payload: object) -> AdvanceChargesRequest | None:
    """The argument of `advance_charges`: None (fan out to every customer with a due charge) or one customer."""
    if payload is None:
        return None
    return _parse(AdvanceChargesRequest, payload, "request")


def parse_event(payload: object) -> Event:
    """Validate any event, choosing the model by its `type`."""
    if isinstance(payload, dict) and payload.get("type") in INVOICE_EVENT_TYPES:
        return parse_invoice_created_event(payload)
    if isinstance(payload, dict) and "type" in payload and payload["type"] not in SUBSCRIPTION_EVENT_TYPES:
        raise InvalidEvent([f"type: must be one of {', '.join(EVENT_TYPES)}"])
    return parse_subscription_event(payload)


def make_event(
    type: str,
    *,
    namespace: str,
    subscription_id: str | None = None,
    invoice_id: str | None = None,
    as_of: datetime | None = None,
    event_id: str | None = None,
) -> Event:
    """Build an event of any type (used by `subsync publish`). Raises InvalidEvent."""
    if type in INVOICE_EVENT_TYPES:
        if invoice_id is None or subscription_id is not None:
            raise InvalidEvent([f"{type} takes an invoice id (--invoice), not a subscription"])
        try:
            return InvoiceCreatedEvent.new(namespace=namespace, invoice_id=invoice_id, as_of=as_of, event_id=event_id)
        except ValidationError as exc:
            raise InvalidEvent(format_validation_error(exc)) from None
    if type not in SUBSCRIPTION_EVENT_TYPES:
        raise InvalidEvent([f"unknown event type {type!r}; expected one of {', '.join(EVENT_TYPES)}"])
    if subscription_id is None or invoice_id is not None:
        raise InvalidEvent([f"{type} takes a subscription id (--subscription), not an invoice"])
    try:
        return SubscriptionEvent.new(
            type, namespace=namespace, subscription_id=subscription_id, as_of=as_of, event_id=event_id
        )
    except ValidationError as exc:
        raise InvalidEvent(format_validation_error(exc)) from None


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__
