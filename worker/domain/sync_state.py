"""Sync state of docs/sync.md §7: whether a subscription has billables and when it must be synced next."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SyncState:
    has_billables: bool
    next_sync_after: datetime | None


NOTHING_TO_BILL = SyncState(has_billables=False, next_sync_after=None)


def after_sync(max_limit: datetime | None, now: datetime) -> SyncState:
    """A subscription with billables: due again at the largest horizon, or now if no phase was processed."""
    return SyncState(has_billables=True, next_sync_after=max_limit if max_limit is not None else now)


def customer_deleted_before_start(customer_deleted_at: datetime | None, active_from: datetime) -> bool:
    """docs/sync.md §8.1: a customer deleted at or before the subscription start stops the sync."""
    return customer_deleted_at is not None and customer_deleted_at <= active_from
