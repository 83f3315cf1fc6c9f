"""Acknowledge messages written by hand that omit `options.redis_message_id`."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware


class ForeignMessageIds(Middleware):
    """Messages written by hand (docs/operations.md §8) may omit `options.redis_message_id`; Dramatiq needs it to
    acknowledge them. It then defaults to the `message_id`, which must equal the hash field used.

    Parameters: none.
    """

    def before_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        message.options.setdefault("redis_message_id", message.message_id)

    before_nack = before_ack
