"""The `subscription_sync_states` row of one subscription (SPEC §7), upserted in the sync transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert

from worker.domain.sync_state import SyncState
from worker.store.tables import subscription_sync_states


def write_sync_state(conn: Connection, namespace: str, subscription_id: str, state: SyncState, now: datetime) -> None:
    values = {
        "namespace": namespace,
        "subscription_id": subscription_id,
        "has_billables": state.has_billables,
        "next_sync_after": state.next_sync_after,
        "synced_at": now,
    }
    stmt = insert(subscription_sync_states).values(values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[subscription_sync_states.c.namespace, subscription_sync_states.c.subscription_id],
            set_={k: stmt.excluded[k] for k in ("has_billables", "next_sync_after", "synced_at")},
        )
    )
