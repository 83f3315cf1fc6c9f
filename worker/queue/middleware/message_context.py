"""Every log line written while a message is handled — Dramatiq's own included — carries its `message_id`."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from worker.infra.logging import bind_message_id


class MessageContext(Middleware):
    """Binds the message's id for the log processors of `worker.infra.logging` from the first
    before-hook to the last after-hook (it is the first middleware, so its after-hooks run last),
    which covers Dramatiq's `Failed to process message …` line and every middleware's lines.

    Parameters: none.
    """

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        bind_message_id(message.message_id)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        bind_message_id(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        bind_message_id(None)
