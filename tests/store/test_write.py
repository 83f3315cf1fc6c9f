"""docs/sync.md §8.1 "Anatomy of a sync", step *write*: a plan goes to Postgres in one psycopg pipeline, and a
steady-state plan writes the sync-state upsert alone."""

from __future__ import annotations

from typing import Any

from psycopg import pq
from sqlalchemy import Connection, Engine, event, func, select

from tests.builders import flat, item, phase, seed_subscription, t, unit
from worker.domain.decide import SyncPlan, decide
from worker.infra.ids import new_id
from worker.store.snapshot import load_snapshot
from worker.store.tables import invoice_lines, invoices, subscription_sync_states
from worker.store.write import write_plan

NOW = t("2024-03-15")


def written(conn: Connection, plan: SyncPlan, **kwargs: Any) -> tuple[list[tuple[str, bool]], bool | None]:
    """The statements `write_plan` executed through SQLAlchemy, each with whether it was sent in a pipeline."""
    seen: list[tuple[str, bool]] = []

    def on_execute(connection: Connection, cursor: Any, statement: str, *_: Any) -> None:
        raw = connection.connection.driver_connection
        seen.append((" ".join(statement.split()[:3]), raw.pgconn.pipeline_status != pq.PipelineStatus.OFF))

    event.listen(conn, "before_cursor_execute", on_execute)
    try:
        answer = write_plan(conn, plan, **kwargs)
    finally:
        event.remove(conn, "before_cursor_execute", on_execute)
    return seen, answer


def test_a_plan_is_written_in_one_pipeline_and_a_steady_one_is_the_upsert_alone(db: Engine) -> None:
    seed_subscription(
        db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01"), item("api", unit("1"), "2024-01-01"))
    )
    with db.connect() as conn, conn.begin():
        plan = decide(load_snapshot(conn, "acme", "sub_01", now=NOW), as_of=NOW, now=NOW, ids=new_id)
        assert plan.gathering_invoice is not None and not plan.is_empty  # a first sync: invoice and lines
        seen, maybe_due = written(conn, plan, due_at=NOW)
    assert [s for s, _ in seen] == ["INSERT INTO invoices", "INSERT INTO invoice_lines"]
    assert all(in_pipeline for _, in_pipeline in seen)
    assert maybe_due is True  # the pipelined upsert answered: the in-advance fee of March is due (docs/sync.md §8.3)
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(invoices)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(invoice_lines)).scalar_one() == len(plan.lines.new_lines)
        state = conn.execute(select(subscription_sync_states)).one()
    assert (state.has_billables, state.next_sync_after, state.synced_at) == (True, plan.state.next_sync_after, NOW)

    with db.connect() as conn, conn.begin():
        steady = decide(load_snapshot(conn, "acme", "sub_01", now=NOW), as_of=NOW, now=NOW, ids=new_id)
        assert steady.is_empty and steady.patches == ()
        seen, _ = written(conn, steady)
    assert seen == [("INSERT INTO subscription_sync_states", False)]


def test_time_text_is_whole_seconds_and_one_text_per_instant() -> None:
    """`time_text` (memoised: docs/performance.md "Charges built when needed") truncates like the stored times
    (docs/sync.md §6.3), and an instant written with another offset still names the same instant."""
    from datetime import UTC, datetime, timedelta, timezone

    from worker.store.db import time_text

    t = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)
    assert time_text(t) == "2024-02-29T23:59:59+00:00"
    shifted = t.astimezone(timezone(timedelta(hours=2)))
    assert datetime.fromisoformat(time_text(shifted)) == datetime.fromisoformat(time_text(t))
    assert time_text(t + timedelta(microseconds=1)) == "2024-03-01T00:00:00+00:00"
