"""Keep, with a failed message, the `invoice.created` events its attempt committed but could not publish,
and hand them to the next attempt."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from worker.app.handlers import InvoicesNotPublished
from worker.contract.events import InvalidEvent, InvoiceCreatedEvent, parse_invoice_created_event
from worker.infra.logging import get_logger
from worker.queue.failures import ActorFailed

log = get_logger(__name__)

#: Message option holding the `invoice.created` payloads an attempt committed but could not publish.
UNPUBLISHED_OPTION = "subsync_unpublished"


@dataclass
class _Owed:
    """The payloads the message being processed carries, until its actor takes them."""

    payloads: list[Any]
    taken: bool = False


_OWED: ContextVar[_Owed | None] = ContextVar("subsync_owed_invoice_events", default=None)


def take_owed_invoice_events() -> list[InvoiceCreatedEvent]:
    """The events an earlier attempt of the message being processed owes, for the actor to publish
    first; taken once (an attempt that fails to publish them owes them again). Empty outside a
    message processed with `OwedInvoiceEvents`."""
    owed = _OWED.get()
    if owed is None or owed.taken:
        return []
    owed.taken = True
    events: list[InvoiceCreatedEvent] = []
    for payload in owed.payloads:
        try:
            events.append(parse_invoice_created_event(payload))
        except InvalidEvent as exc:  # the option was edited by hand: not this event's fault
            log.warning("dropping an invalid owed invoice.created", error=str(exc))
    return events


class OwedInvoiceEvents(Middleware):
    """When an attempt invoiced (committed) and then could not publish `invoice.created` (Redis down),
    a retry would create no new invoice and so never publish them: the payloads are kept in the
    message option `subsync_unpublished`, and the retry's actor (`worker.queue.actors`) takes them
    (`take_owed_invoice_events`) and publishes them first. Payloads its actor did not take stay
    with the message.

    Parameters: none. It must run before Retries re-enqueues the message (after it in the list).
    """

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        kept = message.options.pop(UNPUBLISHED_OPTION, None)
        _OWED.set(_Owed(kept) if isinstance(kept, list) and kept else None)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        owed = _OWED.get()
        _OWED.set(None)
        cause = exception.cause if isinstance(exception, ActorFailed) else exception
        if isinstance(cause, InvoicesNotPublished):
            message.options[UNPUBLISHED_OPTION] = [event.payload() for event in cause.events]
        elif owed is not None and not owed.taken:
            message.options[UNPUBLISHED_OPTION] = owed.payloads

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        owed = _OWED.get()
        _OWED.set(None)
        if owed is not None and not owed.taken:
            message.options[UNPUBLISHED_OPTION] = owed.payloads
