"""`reconcile_due` candidates (docs/sync.md §8.4), keyset paging, and the index behind it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from tests.builders import apply, document, fee, t
from worker.app.handlers import handle_reconcile_due
from worker.contract.events import ReconcileRequest
from worker.domain.sync_state import SyncState
from worker.store.due import due_synced_query, iter_due_pages, overdue_summary
from worker.store.subscriptions import delete_subscription
from worker.store.sync_state import write_sync_state

NOW = datetime(2024, 3, 1, tzinfo=UTC)


def subscription(
    engine: Engine,
    sid: str,
    *,
    namespace: str = "acme",
    start: str = "2024-01-01T00:00:00Z",
    active_to: str | None = None,
    state: SyncState | None = None,
    deleted_at: str | None = None,
) -> None:
    apply(
        engine,
        document(
            namespace, {"fee": [fee(f"{sid}_fee", "10", start)]}, subscription_id=sid, start=start, active_to=active_to
        ),
    )
    with engine.begin() as conn:
        if state is not None:
            write_sync_state(conn, namespace, sid, state, NOW)
        if deleted_at is not None:
            delete_subscription(conn, namespace, sid, t(deleted_at))


def seed_candidates(engine: Engine) -> None:
    due = SyncState(True, t("2024-02-20T00:00:00"))
    subscription(engine, "s_never")
    subscription(engine, "s_due_later", state=SyncState(True, t("2024-02-25T00:00:00")))
    subscription(engine, "s_due", state=due)
    subscription(engine, "s_due_now", state=SyncState(True, NOW))
    subscription(engine, "s_not_yet", state=SyncState(True, t("2024-03-10T00:00:00")))
    subscription(engine, "s_no_billables", state=SyncState(False, None))
    subscription(engine, "s_no_next", state=SyncState(True, None))
    subscription(engine, "s_future", start="2024-04-01T00:00:00Z")
    subscription(engine, "s_ended_long_ago", active_to="2024-02-01T00:00:00Z")
    subscription(engine, "s_ended_long_ago_due", active_to="2024-02-01T00:00:00Z", state=due)
    subscription(engine, "s_ended_yesterday", active_to="2024-02-29T12:00:00Z")
    subscription(engine, "s_deleted", deleted_at="2024-02-10T00:00:00")
    subscription(engine, "s_deleted_synced", deleted_at="2024-02-10T00:00:00", state=SyncState(False, None))
    subscription(engine, "s_deleted_later", deleted_at="2024-05-01T00:00:00")  # not deleted as of now
    subscription(engine, "s_never", namespace="beta")


EXPECTED = [
    ("acme", "s_due"),
    ("acme", "s_due_later"),
    ("acme", "s_due_now"),
    ("acme", "s_deleted"),
    ("acme", "s_deleted_later"),
    ("acme", "s_ended_yesterday"),
    ("acme", "s_never"),
    ("beta", "s_never"),
]


def keys(pages: Sequence[Sequence[object]]) -> list[tuple[str, str]]:
    return [(d.namespace, d.subscription_id) for page in pages for d in page]  # type: ignore[attr-defined]


def test_due_candidates_in_order(db: Engine) -> None:
    seed_candidates(db)
    assert keys(list(iter_due_pages(db, NOW))) == EXPECTED


def test_paging_visits_each_candidate_once(db: Engine) -> None:
    seed_candidates(db)
    for size in (1, 2, 3):
        pages = list(iter_due_pages(db, NOW, page_size=size))
        assert keys(pages) == EXPECTED
        assert all(len(page) <= size for page in pages)


def test_one_namespace_only(db: Engine) -> None:
    seed_candidates(db)
    assert keys(list(iter_due_pages(db, NOW, namespace="beta"))) == [("beta", "s_never")]


def test_reconcile_due_enqueues_one_request_per_due_subscription(db: Engine) -> None:
    seed_candidates(db)
    batches: list[Sequence[ReconcileRequest]] = []
    handled = handle_reconcile_due(db, batches.append, now=NOW, page_size=3)
    assert [(r.namespace, r.subscription_id) for batch in batches for r in batch] == EXPECTED
    assert handled.extra == {"enqueued": len(EXPECTED)}


def test_overdue_summary_matches_what_would_be_enqueued(db: Engine) -> None:
    seed_candidates(db)
    with db.connect() as conn:
        summary = overdue_summary(conn, NOW)
        beta = overdue_summary(conn, NOW, namespace="beta")
    assert (summary.count, summary.oldest_next_sync_after, summary.never_synced) == (3, t("2024-02-20T00:00:00"), 5)
    assert (beta.count, beta.oldest_next_sync_after, beta.never_synced) == (0, None, 1)


def test_the_due_query_is_served_by_the_next_sync_after_index(db: Engine) -> None:
    query = due_synced_query(NOW, after=(t("2024-02-01T00:00:00"), "acme", "s"), limit=100)
    with db.begin() as conn:
        compiled = query.compile(dialect=conn.dialect)
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params))
    assert "ix_subscription_sync_states_next_sync_after" in plan, plan
