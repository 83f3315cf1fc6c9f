"""The Dramatiq actors of queue `subscription-sync` (docs/contract.md §4), run by `subsync worker`.

Actor bodies are thin (`actor_body`): parse the call into an event, call its handler in
`worker.app.handlers` with the process's engine, hand the outcome to the middleware. Logging,
classifying, counting and retrying are middleware (`worker.queue.middleware`); `worker.bootstrap`
declares the actors on the process's broker (importing this module declares nothing).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dramatiq
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Interrupt
from sqlalchemy import Engine

from worker.app.handlers import (
    Handled,
    handle_advance_charges,
    handle_invoice_created,
    handle_reconcile_due,
    handle_reconcile_subscription,
    handle_subscription_event,
    publish_all,
)
from worker.config import Settings
from worker.contract.events import (
    ADVANCE_CHARGES_ACTOR,
    INVOICE_CREATED_ACTOR,
    QUEUE_NAME,
    RECONCILE_DUE_ACTOR,
    RECONCILE_SUBSCRIPTION_ACTOR,
    SUBSCRIPTION_EVENT_ACTOR,
    AdvanceChargesRequest,
    InvalidEvent,
    InvoiceCreatedEvent,
    ReconcileRequest,
    SubscriptionEvent,
    parse_advance_charges,
    parse_invoice_created_event,
    parse_reconcile_request,
    parse_subscription_event,
)
from worker.contract.fields import is_valid_id
from worker.infra.logging import get_logger
from worker.queue.failures import ActorFailed
from worker.queue.keys import reconcile_lock_key
from worker.queue.middleware.owed_invoice_events import UNPUBLISHED_OPTION
from worker.queue.outcome import set_outcome
from worker.queue.publish import enqueue_all, event_message, publish

log = get_logger(__name__)

_E = TypeVar("_E")

#: How an actor was called: its positional and keyword arguments.
ActorCall = tuple[tuple[Any, ...], dict[str, Any]]

# --- running one message -----------------------------------------------------------------------


def one_argument(parse: Callable[[object], _E]) -> Callable[[ActorCall], _E]:
    """Parse the single positional argument of an actor call `(args, kwargs)`; anything else is invalid."""

    def parse_call(call: ActorCall) -> _E:
        args, kwargs = call
        if len(args) != 1 or kwargs:
            raise InvalidEvent(
                [
                    f"the actor takes exactly one argument (the event), got {len(args)} positional and {len(kwargs)} keyword"
                ]
            )
        return parse(args[0])

    return parse_call


def actor_body(parse: Callable[[ActorCall], _E], handle: Callable[[_E], Handled]) -> Callable[..., None]:
    """The body of an actor: parse the call into an event (an invalid one raises `InvalidEvent`, which
    the actors `throw`: dead-lettered at once), add the event to the log context, handle it, and hand
    the outcome to the middleware (`worker.queue.outcome`). Any other failure is raised as
    `ActorFailed`; logging, classifying and counting it is the middleware's business."""

    def body(*args: object, **kwargs: object) -> None:
        try:
            event = parse((args, kwargs))
            log_context = getattr(event, "log_context", None)
            if callable(log_context):
                structlog.contextvars.bind_contextvars(**log_context())
            set_outcome(handle(event))
        except InvalidEvent:
            raise
        except (Exception, Interrupt) as exc:
            raise ActorFailed(exc) from exc

    return body


def parse_reconcile_due(call: ActorCall) -> str | None:
    """The argument of `reconcile_due`: nothing, or `{"namespace": NS}` to limit it to one tenant."""
    call_args, call_kwargs = call
    if not call_args and not call_kwargs:
        return None
    if len(call_args) == 1 and not call_kwargs:
        value = call_args[0]
        if value is None:
            return None
        if isinstance(value, dict) and set(value) == {"namespace"}:
            namespace = value["namespace"]
            if isinstance(namespace, str) and is_valid_id(namespace):
                return namespace
    raise InvalidEvent(['reconcile_due takes no argument (or {"namespace": NS})'])


def parse_advance_charges_call(call: ActorCall) -> AdvanceChargesRequest | None:
    """The argument of `advance_charges` (docs/credits.md §2.5): nothing (fan out), or one customer's request."""
    call_args, call_kwargs = call
    if not call_args and not call_kwargs:
        return None
    if len(call_args) == 1 and not call_kwargs:
        return parse_advance_charges(call_args[0])
    raise InvalidEvent(['advance_charges takes no argument (or {"namespace", "customer_id", "as_of"?, "event_id"?})'])


def advance_charges_message(request: AdvanceChargesRequest | None = None) -> dramatiq.Message[Any]:
    """The `advance_charges` message: without a request, the scheduler's fan-out."""
    args = () if request is None else (request.payload(),)
    return dramatiq.Message(queue_name=QUEUE_NAME, actor_name=ADVANCE_CHARGES_ACTOR, args=args, kwargs={}, options={})


# --- reconcile_due run lock --------------------------------------------------------------------

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


# --- actors ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Actors:
    subscription_event: dramatiq.Actor[..., Any]
    invoice_created: dramatiq.Actor[..., Any]
    reconcile_due: dramatiq.Actor[..., Any]
    reconcile_subscription: dramatiq.Actor[..., Any]
    advance_charges: dramatiq.Actor[..., Any]


def declare_actors(
    broker: dramatiq.Broker,
    settings: Settings,
    *,
    engine: Callable[[], Engine],
) -> Actors:
    """Declare the actors on `broker`, running against `engine()` (`worker.bootstrap` wires them;
    tests pass a StubBroker and their own engine)."""
    time_limit = int(settings.time_limit_seconds * 1000)
    common: dict[str, Any] = {"broker": broker, "queue_name": QUEUE_NAME, "throws": (InvalidEvent,)}

    def publish_invoice_created(event: InvoiceCreatedEvent) -> None:
        publish(event, broker=broker)

    def publish_unpublished() -> None:
        """Publish the `invoice.created` events an earlier attempt of this message could not."""
        message = CurrentMessage.get_current_message()
        kept = message.options.pop(UNPUBLISHED_OPTION, None) if message is not None else None
        if not isinstance(kept, list) or not kept:
            return
        owed: list[InvoiceCreatedEvent] = []
        for payload in kept:
            try:
                owed.append(parse_invoice_created_event(payload))
            except InvalidEvent as exc:  # the option was edited by hand: not this event's fault
                log.warning("dropping an invalid owed invoice.created", error=str(exc))
        publish_all(owed, publish_invoice_created)

    def enqueue_reconciles(requests: Sequence[ReconcileRequest]) -> None:
        enqueue_all(broker, [event_message(request) for request in requests])  # a page per round trip

    def handle_subscription(event: SubscriptionEvent) -> Handled:
        publish_unpublished()
        return handle_subscription_event(
            engine(),
            event,
            invoice_after_sync=settings.invoice_after_sync,
            publish=publish_invoice_created,
            max_target_lines=settings.max_target_lines,
        )

    subscription_event = actor_body(one_argument(parse_subscription_event), handle_subscription)
    invoice_created = actor_body(
        one_argument(parse_invoice_created_event),
        lambda e: handle_invoice_created(engine(), e, max_target_lines=settings.max_target_lines),
    )
    reconcile_subscription = actor_body(
        one_argument(parse_reconcile_request),
        lambda r: handle_reconcile_subscription(engine(), r, max_target_lines=settings.max_target_lines),
    )

    def run_reconcile_due(namespace: str | None) -> Handled:
        """docs/sync.md §8.4, one run at a time: a second `reconcile_due` arriving while one runs skips."""
        token = uuid.uuid4().hex
        lock_key = None
        if isinstance(broker, RedisBroker):
            lock_key = reconcile_lock_key(broker.namespace)
            if not broker.client.set(lock_key, token, nx=True, px=int(settings.reconcile_time_limit_seconds * 1000)):
                return Handled(skipped="another reconcile_due is running")
        try:
            return handle_reconcile_due(
                engine(), enqueue_reconciles, page_size=settings.reconcile_page_size, namespace=namespace
            )
        finally:
            if lock_key is not None and isinstance(broker, RedisBroker):
                broker.client.eval(_RELEASE, 1, lock_key, token)

    reconcile_due = actor_body(parse_reconcile_due, run_reconcile_due)

    def enqueue_advances(requests: Sequence[AdvanceChargesRequest]) -> None:
        enqueue_all(broker, [advance_charges_message(request) for request in requests])

    advance_charges = actor_body(
        parse_advance_charges_call,
        lambda r: handle_advance_charges(engine(), r, enqueue_advances, page_size=settings.reconcile_page_size),
    )

    def declare(fn: Callable[..., None], name: str, limit: int) -> dramatiq.Actor[..., Any]:
        decorator: Any = dramatiq.actor(actor_name=name, time_limit=limit, **common)
        actor: dramatiq.Actor[..., Any] = decorator(fn)
        return actor

    return Actors(
        subscription_event=declare(subscription_event, SUBSCRIPTION_EVENT_ACTOR, time_limit),
        invoice_created=declare(invoice_created, INVOICE_CREATED_ACTOR, time_limit),
        reconcile_due=declare(reconcile_due, RECONCILE_DUE_ACTOR, int(settings.reconcile_time_limit_seconds * 1000)),
        reconcile_subscription=declare(reconcile_subscription, RECONCILE_SUBSCRIPTION_ACTOR, time_limit),
        advance_charges=declare(advance_charges, ADVANCE_CHARGES_ACTOR, time_limit),
    )
