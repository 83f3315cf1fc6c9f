"""The Dramatiq actors of queue `subscription-sync` (docs/contract.md §4), run by `subsync worker`.

The actors are one table (`ACTORS`): each row names an actor, how its call is parsed into an event
and which handler of `worker.app.handlers` runs it. Actor bodies are thin (`actor_body`): parse the
call, call the handler with the process's engine, hand the outcome to the middleware. Logging,
classifying, counting and retrying are middleware (`worker.queue.middleware`); `worker.bootstrap`
binds the settings (`ActorSettings`) and declares the actors on the process's broker (importing
this module declares nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import dramatiq
import structlog
from dramatiq.middleware import Interrupt
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
from worker.queue.failures import ActorFailed
from worker.queue.keys import reconcile_lock_key
from worker.queue.middleware.owed_invoice_events import take_owed_invoice_events
from worker.queue.outcome import set_outcome
from worker.queue.publish import enqueue_all, event_message, publish
from worker.queue.run_lock import run_lock

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


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActorSettings:
    """What the actors run with, bound from `Settings` by `worker.bootstrap.actor_settings`."""

    time_limit_ms: int  # every actor but reconcile_due
    reconcile_time_limit_ms: int  # reconcile_due, and how long its run lock lives
    invoice_after_sync: bool
    max_target_lines: int
    page_size: int  # of the due-subscription and due-customer reads
    reuse_decisions: bool = True  # docs/sync.md §8.6


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a handler row runs against: the broker (to publish and enqueue), the engine, the settings."""

    broker: dramatiq.Broker
    engine: Callable[[], Engine]
    settings: ActorSettings

    def publish_invoice_created(self, event: InvoiceCreatedEvent) -> None:
        publish(event, broker=self.broker)

    def enqueue_reconciles(self, requests: Sequence[ReconcileRequest]) -> None:
        enqueue_all(self.broker, [event_message(request) for request in requests])  # a page per round trip

    def enqueue_advances(self, requests: Sequence[AdvanceChargesRequest]) -> None:
        enqueue_all(self.broker, [advance_charges_message(request) for request in requests])


def _subscription_event(run: Runtime, event: SubscriptionEvent) -> Handled:
    # First the invoice.created events an earlier attempt of this message committed but could not publish.
    publish_all(take_owed_invoice_events(), run.publish_invoice_created)
    return handle_subscription_event(
        run.engine(),
        event,
        invoice_after_sync=run.settings.invoice_after_sync,
        publish=run.publish_invoice_created,
        max_target_lines=run.settings.max_target_lines,
        reuse=run.settings.reuse_decisions,
    )


def _invoice_created(run: Runtime, event: InvoiceCreatedEvent) -> Handled:
    settings = run.settings
    return handle_invoice_created(
        run.engine(), event, max_target_lines=settings.max_target_lines, reuse=settings.reuse_decisions
    )


def _reconcile_subscription(run: Runtime, request: ReconcileRequest) -> Handled:
    settings = run.settings
    return handle_reconcile_subscription(
        run.engine(), request, max_target_lines=settings.max_target_lines, reuse=settings.reuse_decisions
    )


def _reconcile_due(run: Runtime, namespace: str | None) -> Handled:
    """docs/sync.md §8.4, one run at a time: a second `reconcile_due` arriving while one runs skips."""
    with run_lock(run.broker, reconcile_lock_key, run.settings.reconcile_time_limit_ms) as held:
        if not held:
            return Handled(skipped="another reconcile_due is running")
        return handle_reconcile_due(
            run.engine(), run.enqueue_reconciles, page_size=run.settings.page_size, namespace=namespace
        )


def _advance_charges(run: Runtime, request: AdvanceChargesRequest | None) -> Handled:
    return handle_advance_charges(run.engine(), request, run.enqueue_advances, page_size=run.settings.page_size)


@dataclass(frozen=True, slots=True)
class ActorRow(Generic[_E]):
    """One actor: its name on the queue, how a call is parsed into its event, the handler that runs it."""

    name: str
    parse: Callable[[ActorCall], _E]
    handle: Callable[[Runtime, _E], Handled]
    long_running: bool = False  # limited by `reconcile_time_limit_ms`, not `time_limit_ms`

    def time_limit_ms(self, settings: ActorSettings) -> int:
        return settings.reconcile_time_limit_ms if self.long_running else settings.time_limit_ms

    def body(self, run: Runtime) -> Callable[..., None]:
        handle = self.handle
        return actor_body(self.parse, lambda event: handle(run, event))


#: The actors of queue `subscription-sync` (docs/contract.md §4, docs/credits.md §2.5).
ACTORS: tuple[ActorRow[Any], ...] = (
    ActorRow(SUBSCRIPTION_EVENT_ACTOR, one_argument(parse_subscription_event), _subscription_event),
    ActorRow(INVOICE_CREATED_ACTOR, one_argument(parse_invoice_created_event), _invoice_created),
    ActorRow(RECONCILE_DUE_ACTOR, parse_reconcile_due, _reconcile_due, long_running=True),
    ActorRow(RECONCILE_SUBSCRIPTION_ACTOR, one_argument(parse_reconcile_request), _reconcile_subscription),
    ActorRow(ADVANCE_CHARGES_ACTOR, parse_advance_charges_call, _advance_charges),
)


# --- declaring them ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Actors:
    """The declared actors, by name (`ACTORS`)."""

    subscription_event: dramatiq.Actor[..., Any]
    invoice_created: dramatiq.Actor[..., Any]
    reconcile_due: dramatiq.Actor[..., Any]
    reconcile_subscription: dramatiq.Actor[..., Any]
    advance_charges: dramatiq.Actor[..., Any]


def declare_actors(broker: dramatiq.Broker, settings: ActorSettings, *, engine: Callable[[], Engine]) -> Actors:
    """Declare the actors of `ACTORS` on `broker`, running against `engine()` (`worker.bootstrap` wires
    them; tests pass a StubBroker and their own engine)."""
    run = Runtime(broker, engine, settings)
    declared: dict[str, dramatiq.Actor[..., Any]] = {}
    for row in ACTORS:
        decorator: Any = dramatiq.actor(
            actor_name=row.name,
            queue_name=QUEUE_NAME,
            broker=broker,
            time_limit=row.time_limit_ms(settings),
            throws=(InvalidEvent,),
        )
        declared[row.name] = decorator(row.body(run))
    return Actors(**declared)
