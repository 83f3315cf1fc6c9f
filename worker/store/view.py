"""Loading the subscription view (SPEC §2.1) in two queries: the subscription with its customer, then
its live phases with their live items."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from worker.domain.prices import price_from_json
from worker.domain.timeutil import Duration
from worker.domain.view import ItemRecord, PhaseRecord, RateCard, SubscriptionRecord
from worker.store.tables import customers, subscription_items, subscription_phases, subscriptions


class NotFoundError(LookupError):
    """A row the operation needs does not exist (in that namespace)."""


@dataclass(frozen=True, slots=True)
class LoadedSubscription:
    record: SubscriptionRecord
    deleted_at: datetime | None
    customer_exists: bool
    customer_deleted_at: datetime | None

    def is_deleted(self, now: datetime) -> bool:
        return self.deleted_at is not None and self.deleted_at <= now


def load_subscription(conn: Connection, namespace: str, subscription_id: str) -> LoadedSubscription:
    """The subscription row, soft-deleted or not, with its customer's deletion time; the row is
    share-locked until the end of the transaction."""
    s, c = subscriptions, customers
    row = conn.execute(
        select(
            s,
            c.c.id.label("customer_row_id"),
            c.c.deleted_at.label("customer_deleted_at"),
        )
        .select_from(s.outerjoin(c, and_(c.c.namespace == s.c.namespace, c.c.id == s.c.customer_id)))
        .where(s.c.namespace == namespace, s.c.id == subscription_id)
        # FOR SHARE: a concurrent `subscriptions apply` (which locks the row) either finished before
        # this read or waits for this transaction, so phases and items are read from one version.
        .with_for_update(read=True, of=s)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"subscription {subscription_id!r} not found in namespace {namespace!r}")
    record = SubscriptionRecord(
        namespace=row.namespace,
        id=row.id,
        customer_id=row.customer_id,
        currency=row.currency,
        billing_cadence=Duration.parse(row.billing_cadence),
        billing_anchor=row.billing_anchor,
        pro_rating_enabled=row.pro_rating_enabled,
        pro_rating_mode=row.pro_rating_mode,
        active_from=row.active_from,
        active_to=row.active_to,
    )
    return LoadedSubscription(record, row.deleted_at, row.customer_row_id is not None, row.customer_deleted_at)


def load_phases(conn: Connection, namespace: str, subscription_id: str, now: datetime) -> list[PhaseRecord]:
    """Phases and item versions not deleted as of `now`, in one query."""
    p, i = subscription_phases, subscription_items
    live_item = and_(
        i.c.namespace == p.c.namespace,
        i.c.phase_id == p.c.id,
        or_(i.c.deleted_at.is_(None), i.c.deleted_at > now),
    )
    rows = conn.execute(
        select(
            p.c.id,
            p.c.key,
            p.c.name,
            p.c.active_from,
            p.c.sort_hint,
            i.c.id.label("item_id"),
            i.c.key.label("item_key"),
            i.c.active_from.label("item_from"),
            i.c.active_to.label("item_to"),
            i.c.annotations.label("item_annotations"),
            i.c.rate_card.label("item_rate_card"),
        )
        .select_from(p.outerjoin(i, live_item))
        .where(
            p.c.namespace == namespace,
            p.c.subscription_id == subscription_id,
            or_(p.c.deleted_at.is_(None), p.c.deleted_at > now),
        )
    ).all()
    heads: dict[str, Any] = {}
    items: dict[str, list[ItemRecord]] = {}
    for row in rows:
        heads.setdefault(row.id, row)
        bucket = items.setdefault(row.id, [])
        if row.item_id is not None:
            bucket.append(
                ItemRecord(
                    id=row.item_id,
                    key=row.item_key,
                    active_from=row.item_from,
                    active_to=row.item_to,
                    rate_card=rate_card_from_json(row.item_rate_card),
                    annotations=row.item_annotations or {},
                )
            )
    return [PhaseRecord(h.id, h.key, h.name, h.active_from, h.sort_hint, tuple(items[pid])) for pid, h in heads.items()]


def rate_card_from_json(data: Mapping[str, Any]) -> RateCard:
    cadence = data.get("billing_cadence")
    return RateCard(
        name=data["name"],
        description=data.get("description"),
        feature_key=data.get("feature_key"),
        billing_cadence=Duration.parse(cadence) if cadence else None,
        price=price_from_json(data.get("price")),
        discounts=data.get("discounts"),
        tax_config=data.get("tax_config"),
    )
