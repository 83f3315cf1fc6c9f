"""The per-customer lock (docs/sync.md §6.1): a transaction-scoped advisory lock on (namespace, customer).

Every writer of a customer's invoices (sync, invoicing) takes it first, so their transactions on one
customer are serialised and two of them never interleave. Waiting is bounded by `lock_timeout`: a
timed-out wait raises `LockNotAvailable`, which the worker treats as transient and retries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, literal_column, text

DEFAULT_LOCK_TIMEOUT = "30s"

_LOCK = text("SELECT set_config('lock_timeout', :timeout, true), pg_advisory_xact_lock(hashtextextended(:key, 0))")


def customer_lock_key(namespace: str, customer_id: str) -> str:
    # '/' can appear in neither a namespace nor an id (docs/contract.md §3), so the key is unambiguous.
    return f"{namespace}/{customer_id}"


def customer_lock_key_sql(namespace: Any, customer_id: Any) -> Any:
    """The advisory lock key of `customer_lock_key` as a SQL expression of two columns, for statements
    that take the lock while reading the row that names the customer (`worker.store.view.load_and_lock_subscription`)."""
    return func.hashtextextended(namespace.concat(literal_column("'/'")).concat(customer_id), literal_column("0"))


def lock_customer(conn: Connection, namespace: str, customer_id: str, timeout: str = DEFAULT_LOCK_TIMEOUT) -> None:
    """Block until this transaction holds the customer's lock (released at commit or rollback)."""
    conn.execute(_LOCK, {"timeout": timeout, "key": customer_lock_key(namespace, customer_id)})
