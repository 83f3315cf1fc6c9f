"""Keep, with a failed message, the `invoice.created` events its attempt committed but could not publish."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from worker.app.handlers import InvoicesNotPublished
from worker.queue.failures import ActorFailed

#: Message option holding the `invoice.created` payloads an attempt committed but could not publish.
UNPUBLISHED_OPTION = "subsync_unpublished"


class OwedInvoiceEvents(Middleware):
    """When an attempt invoiced (committed) and then could not publish `invoice.created` (Redis down),
    a retry would create no new invoice and so never publish them: the payloads are kept in the
    message option `subsync_unpublished`, which the retry (`worker.queue.actors`) publishes first.

    Parameters: none. It must run before Retries re-enqueues the message (after it in the list).
    """

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        cause = exception.cause if isinstance(exception, ActorFailed) else exception
        if isinstance(cause, InvoicesNotPublished):
            message.options[UNPUBLISHED_OPTION] = [event.payload() for event in cause.events]
