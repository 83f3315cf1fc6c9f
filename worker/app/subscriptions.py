"""Writing what the subscription service owns: customers and subscription documents (docs/contract.md §3),
each in one transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from worker.contract.documents import SubscriptionDocument
from worker.errors import NotFoundError
from worker.store import customers, subscriptions
from worker.store.customers import Customer
from worker.store.db import run_transaction
from worker.store.subscriptions import StoredSubscription


def upsert_customer(
    engine: Engine,
    namespace: str,
    customer_id: str,
    *,
    name: str | None = None,
    deleted_at: datetime | None = None,
    undelete: bool = False,
) -> Customer:
    return run_transaction(
        engine,
        lambda conn: customers.upsert_customer(
            conn, namespace, customer_id, name=name, deleted_at=deleted_at, undelete=undelete
        ),
    )


def apply_subscription(engine: Engine, document: SubscriptionDocument) -> StoredSubscription:
    """Insert or replace the subscription of a validated document; every id of the result is filled in."""
    return run_transaction(engine, lambda conn: subscriptions.apply_subscription(conn, document))


def get_subscription(engine: Engine, namespace: str, subscription_id: str) -> StoredSubscription:
    """The stored subscription (soft-deleted ones too). Raises NotFoundError."""
    stored = run_transaction(engine, lambda conn: subscriptions.get_subscription(conn, namespace, subscription_id))
    if stored is None:
        raise NotFoundError(f"subscription {subscription_id!r} does not exist in namespace {namespace!r}")
    return stored


def delete_subscription(engine: Engine, namespace: str, subscription_id: str, at: datetime | None = None) -> datetime:
    """Soft-delete the subscription at `at` (default: now); the stored `deleted_at`."""
    return run_transaction(engine, lambda conn: subscriptions.delete_subscription(conn, namespace, subscription_id, at))
