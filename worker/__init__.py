"""subsync: keeps billing invoice lines in step with subscriptions (Dramatiq worker)."""

__version__ = "0.1.0"
