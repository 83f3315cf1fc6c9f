"""The `subscription_sync_states` row of one subscription (docs/sync.md §7), upserted in the sync transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import insert

from worker.domain.reuse import DecisionToken
from worker.domain.sync_state import SyncState
from worker.domain.timeutil import trunc
from worker.store.db import compiled_for_cursor, execute_on_cursor
from worker.store.tables import subscription_sync_states

# The recorded decision (docs/sync.md §8.6) is written with the state: `decision_digest` is the sync's input head, then
# `:` and the digest of its read when its decision may be reused (the window then set too); null without a head.
_DECISION = ("decision_digest", "decision_holds_from", "decision_holds_until")
_SET = ("has_billables", "next_sync_after", "synced_at", *_DECISION)
_COLUMNS = ("namespace", "subscription_id", *_SET)
_new = insert(subscription_sync_states).values({name: bindparam(name) for name in _COLUMNS})
# Built once, at import: building this upsert cost ~130 µs per sync (measured with bench/).
_UPSERT = _new.on_conflict_do_update(
    index_elements=[subscription_sync_states.c.namespace, subscription_sync_states.c.subscription_id],
    set_={k: _new.excluded[k] for k in _SET},
)


# The same upsert, also answering "can the after-sync invoicing (docs/sync.md §8.3) find anything to bill?" in the
# same round trip, after the sync's own writes and under the customer lock. docs/sync.md §9
# step 2, not progressive: a line is billable only if trunc(invoice_at) <= X, i.e. invoice_at < X + 1 s
# (usage lines also need their end <= X). §9 invoices the whole *customer* (every subscription and manual
# line of its live gathering invoices), so the subscription's own state is not enough. A live group child
# counts as "maybe due" whatever its invoice_at, so that §9's error on a child whose price cannot be billed
# progressively is still raised by the invoicing step (never skipped).
_UPSERT_MAYBE_DUE_SQL = """
    INSERT INTO subscription_sync_states (namespace, subscription_id, has_billables, next_sync_after, synced_at,
        decision_digest, decision_holds_from, decision_holds_until)
    VALUES (:namespace, :subscription_id, :has_billables, :next_sync_after, :synced_at,
        :decision_digest, :decision_holds_from, :decision_holds_until)
    ON CONFLICT (namespace, subscription_id) DO UPDATE SET has_billables = excluded.has_billables,
        next_sync_after = excluded.next_sync_after, synced_at = excluded.synced_at,
        decision_digest = excluded.decision_digest, decision_holds_from = excluded.decision_holds_from,
        decision_holds_until = excluded.decision_holds_until
    RETURNING EXISTS (
        SELECT 1 FROM invoices i JOIN invoice_lines l ON l.namespace = i.namespace AND l.invoice_id = i.id
        WHERE i.namespace = :namespace AND i.customer_id = :customer_id AND i.type = 'gathering'
            AND i.deleted_at IS NULL AND l.deleted_at IS NULL
            AND (l.invoice_at < :due_before OR l.split_line_group_id IS NOT NULL)
    ) AS maybe_due
"""
_UPSERT_MAYBE_DUE = text(_UPSERT_MAYBE_DUE_SQL)


def recorded_decision(
    digest: str | None, holds_from: datetime | None, holds_until: datetime | None
) -> tuple[str | None, DecisionToken | None]:
    """The input head and the reusable decision the three `decision_*` columns record (`_params` writes them)."""
    head, _, decided = (digest or "").partition(":")
    if not decided or holds_from is None or holds_until is None:
        return head or None, None
    return head or None, DecisionToken(decided, holds_from, holds_until)


def _params(
    namespace: str,
    subscription_id: str,
    state: SyncState,
    now: datetime,
    decision: DecisionToken | None,
    head: str | None,
) -> dict[str, Any]:
    kept = decision if head is not None else None  # a decision is recorded with its head only
    return {
        "namespace": namespace,
        "subscription_id": subscription_id,
        "has_billables": state.has_billables,
        "next_sync_after": state.next_sync_after,
        "synced_at": now,
        "decision_digest": head if kept is None else f"{head}:{kept.digest}",
        "decision_holds_from": kept.holds_from if kept is not None else None,
        "decision_holds_until": kept.holds_until if kept is not None else None,
    }


def send_sync_state(
    conn: Connection,
    namespace: str,
    subscription_id: str,
    state: SyncState,
    now: datetime,
    *,
    due: tuple[str, datetime],
    decision: DecisionToken | None = None,
    head: str | None = None,
) -> Callable[[], bool]:
    """`write_sync_state(..., due=due)` for a psycopg pipeline (worker.store.write.pipelined): the statement is sent
    now, on the connection's psycopg cursor (a SQLAlchemy result cannot be read inside a pipeline), and the
    returned function reads its answer once the pipeline has synchronised: no round trip of its own."""
    customer_id, x = due
    params = {**_params(namespace, subscription_id, state, now, decision, head), "customer_id": customer_id}
    params["due_before"] = trunc(x) + timedelta(seconds=1)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    sql, _ = compiled_for_cursor(_UPSERT_MAYBE_DUE)  # `%(name)s` placeholders; it binds no value of its own
    cursor.execute(sql, params)

    def answer() -> bool:
        row = cursor.fetchone()
        cursor.close()
        return bool(row[0]) if row is not None else False

    return answer


def write_sync_state(
    conn: Connection,
    namespace: str,
    subscription_id: str,
    state: SyncState,
    now: datetime,
    *,
    due: tuple[str, datetime] | None = None,
    decision: DecisionToken | None = None,
    head: str | None = None,
) -> bool | None:
    """Upsert the sync state. With `due = (customer_id, x)` (x: the instant the after-sync invoicing will
    use), also return whether that invoicing can bill anything (False: it certainly bills nothing). `decision`: the
    sync's reusable decision and `head` its input head (docs/sync.md §8.6); None clears them."""
    params = _params(namespace, subscription_id, state, now, decision, head)
    if due is None:
        execute_on_cursor(conn, _UPSERT, params, rows=False)  # a steady-state sync's one write
        return None
    customer_id, x = due
    due_before = trunc(x) + timedelta(seconds=1)
    return bool(
        conn.execute(_UPSERT_MAYBE_DUE, {**params, "customer_id": customer_id, "due_before": due_before}).scalar_one()
    )
