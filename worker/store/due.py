"""Which subscriptions `reconcile_due` enqueues (docs/sync.md §8.4), read in keyset-paged queries.

Candidates are subscriptions deleted as of now, and live ones with `active_from < now` and
(`active_to` null or `active_to > now - 24h`). A candidate is due when it was never synced, or when
its sync state has billables and `next_sync_after <= now`. Two queries, each paged by a key that an
index serves:

1. synced and due: `subscription_sync_states` ordered by (`next_sync_after`, namespace, id), read
   through `ix_subscription_sync_states_next_sync_after`, joined to its subscription;
2. never synced: `subscriptions_never_synced` (one row per subscription without a sync state, kept by
   triggers: migration 0003, docs/scaling.md §3.2) ordered by its primary key (namespace, subscription_id),
   joined to its subscription. Each row is re-checked against `subscription_sync_states` by primary key, so
   "never synced" keeps meaning "no sync-state row" (docs/contract.md §2) even if a row were stale.

The reconciler runs across tenants by design; every join matches on `namespace`, and a `namespace`
argument restricts both queries to one tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, exists, func, or_, select, tuple_

from worker.store.db import keyset_pages
from worker.store.tables import subscription_sync_states, subscriptions, subscriptions_never_synced

ACTIVE_TO_GRACE = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class DueSubscription:
    namespace: str
    subscription_id: str
    next_sync_after: datetime | None  # None: never synced


def _candidate(now: datetime) -> ColumnElement[bool]:
    s = subscriptions
    deleted = and_(s.c.deleted_at.is_not(None), s.c.deleted_at <= now)
    live = and_(
        or_(s.c.deleted_at.is_(None), s.c.deleted_at > now),
        s.c.active_from < now,
        or_(s.c.active_to.is_(None), s.c.active_to > now - ACTIVE_TO_GRACE),
    )
    return or_(deleted, live)


def due_synced_query(
    now: datetime,
    *,
    after: tuple[datetime, str, str] | None = None,
    limit: int = 500,
    namespace: str | None = None,
) -> Select[tuple[str, str, datetime]]:
    """Synced subscriptions due now, in (`next_sync_after`, namespace, id) order, after `after`."""
    st, s = subscription_sync_states, subscriptions
    query = (
        select(st.c.namespace, st.c.subscription_id, st.c.next_sync_after)
        .select_from(st.join(s, and_(s.c.namespace == st.c.namespace, s.c.id == st.c.subscription_id)))
        .where(st.c.has_billables, st.c.next_sync_after.is_not(None), st.c.next_sync_after <= now, _candidate(now))
        .order_by(st.c.next_sync_after, st.c.namespace, st.c.subscription_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(
            st.c.next_sync_after >= after[0],  # lets the index bound the scan
            tuple_(st.c.next_sync_after, st.c.namespace, st.c.subscription_id) > tuple_(*after),
        )
    if namespace is not None:
        query = query.where(st.c.namespace == namespace)
    return query


def due_synced_page(
    conn: Connection,
    now: datetime,
    *,
    after: tuple[datetime, str, str] | None = None,
    limit: int = 500,
    namespace: str | None = None,
) -> list[DueSubscription]:
    query = due_synced_query(now, after=after, limit=limit, namespace=namespace)
    return [DueSubscription(r.namespace, r.subscription_id, r.next_sync_after) for r in conn.execute(query)]


def never_synced_page(
    conn: Connection,
    now: datetime,
    *,
    after: tuple[str, str] | None = None,
    limit: int = 500,
    namespace: str | None = None,
) -> list[DueSubscription]:
    """Candidate subscriptions without a sync state, in (namespace, id) order, after `after`."""
    p = subscriptions_never_synced
    query = _never_synced(select(p.c.namespace, p.c.subscription_id), now, namespace)
    query = query.order_by(p.c.namespace, p.c.subscription_id).limit(limit)
    if after is not None:
        query = query.where(tuple_(p.c.namespace, p.c.subscription_id) > tuple_(*after))
    return [DueSubscription(r.namespace, r.subscription_id, None) for r in conn.execute(query)]


def _never_synced(query: Select[Any], now: datetime, namespace: str | None) -> Select[Any]:
    """`query` over the never-synced rows (docs/scaling.md §3.2) whose subscription is a candidate now."""
    p, s, st = subscriptions_never_synced, subscriptions, subscription_sync_states
    has_state = exists().where(st.c.namespace == p.c.namespace, st.c.subscription_id == p.c.subscription_id)
    query = query.select_from(p.join(s, and_(s.c.namespace == p.c.namespace, s.c.id == p.c.subscription_id))).where(
        ~has_state, _candidate(now)
    )
    if namespace is not None:
        query = query.where(p.c.namespace == namespace)
    return query


def iter_due_pages(
    engine: Engine, now: datetime, *, page_size: int = 500, namespace: str | None = None
) -> Iterator[list[DueSubscription]]:
    """Every due subscription, a page (one short read transaction) at a time."""
    yield from keyset_pages(
        engine,
        lambda conn, after: due_synced_page(conn, now, after=after, limit=page_size, namespace=namespace),
        _synced_key,
        page_size,
    )
    yield from keyset_pages(
        engine,
        lambda conn, after: never_synced_page(conn, now, after=after, limit=page_size, namespace=namespace),
        lambda due: (due.namespace, due.subscription_id),
        page_size,
    )


def _synced_key(due: DueSubscription) -> tuple[datetime, str, str]:
    assert due.next_sync_after is not None  # a synced subscription has its next_sync_after
    return (due.next_sync_after, due.namespace, due.subscription_id)


@dataclass(frozen=True, slots=True)
class Overdue:
    count: int
    oldest_next_sync_after: datetime | None
    never_synced: int


def overdue_summary(conn: Connection, now: datetime, *, namespace: str | None = None) -> Overdue:
    """For `subsync status`: what `reconcile_due` would enqueue now — how many synced subscriptions
    are due and the oldest `next_sync_after` among them, and how many candidates were never synced."""
    st, s = subscription_sync_states, subscriptions
    due = (
        select(func.count(), func.min(st.c.next_sync_after))
        .select_from(st.join(s, and_(s.c.namespace == st.c.namespace, s.c.id == st.c.subscription_id)))
        .where(st.c.has_billables, st.c.next_sync_after.is_not(None), st.c.next_sync_after <= now, _candidate(now))
    )
    never = _never_synced(select(func.count()), now, namespace)
    if namespace is not None:
        due = due.where(st.c.namespace == namespace)
    count, oldest = conn.execute(due).one()
    return Overdue(int(count), oldest, int(conn.execute(never).scalar_one()))
