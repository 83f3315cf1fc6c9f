"""The Dramatiq actors of queue `subscription-sync` (CONTRACT §4). Run them with `subsync worker`
(`dramatiq worker.process:main --queues subscription-sync`).

| actor | argument | handler |
|---|---|---|
| `subscription_event` | a subscription event | `handlers.handle_subscription_event` |
| `invoice_created` | an `invoice.created` event | `handlers.handle_invoice_created` |
| `reconcile_due` | none (or `{"namespace": NS}` to limit it to one tenant) | `handlers.handle_reconcile_due` |
| `reconcile_subscription` (internal) | `{"namespace", "subscription_id"}` | `handlers.handle_reconcile_subscription` |

Actor bodies are thin: validate the payload (an invalid one raises `InvalidEvent`, which the actors
declare in `throws`, so it is dead-lettered at once), bind the log context, call the handler with the
process's engine, log the outcome. Failures are classified (`worker.queue.failures`) and re-raised as
`SyncFailure`, which the Retries middleware retries or dead-letters by reason.

`worker.bootstrap` declares them on the process's broker; importing this module declares nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import dramatiq
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Interrupt
from sqlalchemy import Engine

from worker.app.handlers import (
    Handled,
    InvoicesNotPublished,
    handle_invoice_created,
    handle_reconcile_due,
    handle_reconcile_subscription,
    handle_subscription_event,
    publish_all,
)
from worker.app.sync import SyncResult
from worker.config import Settings
from worker.contract.events import (
    INVOICE_CREATED_ACTOR,
    QUEUE_NAME,
    RECONCILE_DUE_ACTOR,
    RECONCILE_SUBSCRIPTION_ACTOR,
    SUBSCRIPTION_EVENT_ACTOR,
    InvalidEvent,
    InvoiceCreatedEvent,
    ReconcileRequest,
    SubscriptionEvent,
    parse_invoice_created_event,
    parse_reconcile_request,
    parse_subscription_event,
)
from worker.contract.fields import is_valid_id
from worker.contract.text import format_time
from worker.infra.logging import get_logger
from worker.queue import metrics
from worker.queue.failures import FAILURE_OPTION, INVALID_PAYLOAD, RetryPolicy, SyncFailure, classify, describe, kind_of
from worker.queue.keys import reconcile_lock_key
from worker.queue.publish import event_message, publish

log = get_logger(__name__)

#: Message option holding the `invoice.created` payloads an attempt committed but could not publish.
UNPUBLISHED_OPTION = "subsync_unpublished"

_E = TypeVar("_E")

#: How an actor was called: its positional and keyword arguments.
ActorCall = tuple[tuple[Any, ...], dict[str, Any]]

# --- running one message -----------------------------------------------------------------------


def _current_attempt() -> tuple[Any, int]:
    message = CurrentMessage.get_current_message()
    retries = int(message.options.get("retries", 0) or 0) if message is not None else 0
    return message, retries


def one_argument(parse: Callable[[object], _E]) -> Callable[[object], _E]:
    """Parse the single positional argument of an actor call `(args, kwargs)`; anything else is invalid."""

    def parse_call(call: object) -> _E:
        args, kwargs = cast(ActorCall, call)
        if len(args) != 1 or kwargs:
            raise InvalidEvent(
                [
                    f"the actor takes exactly one argument (the event), got {len(args)} positional and {len(kwargs)} keyword"
                ]
            )
        return parse(args[0])

    return parse_call


def run_message(
    actor_name: str,
    payload: object,
    parse: Callable[[object], _E],
    handle: Callable[[_E], Handled],
    settings: Settings,
) -> Handled:
    """Parse, handle and log one message; classify any failure (see the module docstring)."""
    message, retries = _current_attempt()
    started = time.monotonic()
    context: dict[str, Any] = {
        "actor": actor_name,
        "message_id": message.message_id if message is not None else None,
        "attempt": retries + 1,
    }
    if message is not None:
        message.options.pop(FAILURE_OPTION, None)  # left by an earlier attempt
    # Worker threads run one message at a time: the context is this message's only.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**context)
    try:
        try:
            event = parse(payload)
            log_context = getattr(event, "log_context", None)
            if callable(log_context):
                structlog.contextvars.bind_contextvars(**log_context())
            handled = handle(event)
        except (Exception, Interrupt) as exc:
            reason = classify(exc)
            error = describe(exc)
            will_retry = RetryPolicy.from_settings(settings).should_retry(retries, reason)
            if message is not None:
                message.options[FAILURE_OPTION] = {"reason": reason, "error": error, "attempt": retries + 1}
                if isinstance(exc, InvoicesNotPublished):  # committed invoices whose event is still owed
                    message.options[UNPUBLISHED_OPTION] = [e.payload() for e in exc.events]
            metrics.record_failure(actor_name, reason)
            (log.warning if will_retry else log.error)(
                "message.failed",
                reason=reason,
                kind=str(kind_of(reason)),
                error=error,
                will_retry=will_retry,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
            if reason == INVALID_PAYLOAD:
                raise
            raise SyncFailure(reason, error) from exc
        for result in handled.syncs:
            metrics.record_sync(actor_name, result.counts())
        metrics.record_invoices(len(handled.invoices))
        log.info(
            "message.done",
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            customer_id=handled.customer_id,
            patches=handled.counts(),
            syncs=[_sync_summary(r) for r in handled.syncs] if len(handled.syncs) > 1 else None,
            as_of=format_time(handled.syncs[0].as_of) if len(handled.syncs) == 1 else None,
            invoices=[i.id for i in handled.invoices] or None,
            skipped=handled.skipped,
            **handled.extra,
        )
        return handled
    finally:
        structlog.contextvars.clear_contextvars()


def _sync_summary(result: SyncResult) -> dict[str, Any]:
    return {"subscription_id": result.subscription_id, "patches": result.counts()}


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
        for request in requests:
            broker.enqueue(event_message(request))

    def handle_subscription(event: SubscriptionEvent) -> Handled:
        publish_unpublished()
        return handle_subscription_event(
            engine(),
            event,
            invoice_after_sync=settings.invoice_after_sync,
            publish=publish_invoice_created,
            max_target_lines=settings.max_target_lines,
        )

    def subscription_event(*args: object, **kwargs: object) -> None:
        run_message(
            SUBSCRIPTION_EVENT_ACTOR,
            (args, kwargs),
            one_argument(parse_subscription_event),
            handle_subscription,
            settings,
        )

    def invoice_created(*args: object, **kwargs: object) -> None:
        run_message(
            INVOICE_CREATED_ACTOR,
            (args, kwargs),
            one_argument(parse_invoice_created_event),
            lambda e: handle_invoice_created(engine(), e, max_target_lines=settings.max_target_lines),
            settings,
        )

    def reconcile_subscription(*args: object, **kwargs: object) -> None:
        run_message(
            RECONCILE_SUBSCRIPTION_ACTOR,
            (args, kwargs),
            one_argument(parse_reconcile_request),
            lambda r: handle_reconcile_subscription(engine(), r, max_target_lines=settings.max_target_lines),
            settings,
        )

    def reconcile_due(*args: object, **kwargs: object) -> None:
        def parse(call: object) -> str | None:
            call_args, call_kwargs = cast(ActorCall, call)
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

        def handle(namespace: str | None) -> Handled:
            token = uuid.uuid4().hex
            lock_key = None
            if isinstance(broker, RedisBroker):
                lock_key = reconcile_lock_key(broker.namespace)
                if not broker.client.set(
                    lock_key, token, nx=True, px=int(settings.reconcile_time_limit_seconds * 1000)
                ):
                    return Handled(skipped="another reconcile_due is running")
            try:
                return handle_reconcile_due(
                    engine(), enqueue_reconciles, page_size=settings.reconcile_page_size, namespace=namespace
                )
            finally:
                if lock_key is not None and isinstance(broker, RedisBroker):
                    broker.client.eval(_RELEASE, 1, lock_key, token)

        run_message(RECONCILE_DUE_ACTOR, (args, kwargs), parse, handle, settings)

    def declare(fn: Callable[..., None], name: str, limit: int) -> dramatiq.Actor[..., Any]:
        decorator: Any = dramatiq.actor(actor_name=name, time_limit=limit, **common)
        actor: dramatiq.Actor[..., Any] = decorator(fn)
        return actor

    return Actors(
        subscription_event=declare(subscription_event, SUBSCRIPTION_EVENT_ACTOR, time_limit),
        invoice_created=declare(invoice_created, INVOICE_CREATED_ACTOR, time_limit),
        reconcile_due=declare(reconcile_due, RECONCILE_DUE_ACTOR, int(settings.reconcile_time_limit_seconds * 1000)),
        reconcile_subscription=declare(reconcile_subscription, RECONCILE_SUBSCRIPTION_ACTOR, time_limit),
    )
