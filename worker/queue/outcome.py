"""What the message running in this thread did, handed from the actor body to the middleware.

Dramatiq warns about an actor that returns a value without the Results middleware, so an actor body
returns nothing and sets its outcome here instead; the middleware of the same worker thread reads it.
"""

from __future__ import annotations

from contextvars import ContextVar

from worker.app.handlers import Handled

_OUTCOME: ContextVar[Handled | None] = ContextVar("subsync_outcome", default=None)


def set_outcome(handled: Handled | None) -> None:
    _OUTCOME.set(handled)


def current_outcome() -> Handled | None:
    """The outcome of the message this thread runs (None before its actor body returned)."""
    return _OUTCOME.get()
