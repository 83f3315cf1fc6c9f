"""The never-synced rows (migration 0003, docs/scaling.md §3.2, docs/sync.md §8.4): whoever writes
`subscriptions` or `subscription_sync_states`, and however, a subscription is found as never synced exactly while
it has no sync-state row — the meaning docs/contract.md §2 gives "never synced"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, create_engine, pool, select, text

from tests.builders import flat, item, phase, seed_subscription, t, unique
from worker.app.sync import sync_subscription
from worker.domain.sync_state import SyncState
from worker.store import migrations as migrate
from worker.store.due import iter_due_pages, overdue_summary
from worker.store.sync_state import write_sync_state
from worker.store.tables import subscriptions_never_synced

NOW = datetime(2024, 3, 1, tzinfo=UTC)

INSERT_SUBSCRIPTION = (
    "INSERT INTO subscriptions (namespace, id, customer_id, name, currency, billing_cadence, billing_anchor, "
    "pro_rating_enabled, pro_rating_mode, active_from) VALUES (:ns, :id, 'cust_01', 'Pro', 'USD', 'P1M', "
    "'2024-01-01Z', true, 'prorate_prices', '2024-01-01Z')"
)


def _insert_raw(engine: Engine, namespace: str, *ids: str) -> None:
    """What another program writing `subscriptions` directly does (docs/contract.md §2): plain SQL."""
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO customers (namespace, id) VALUES (:ns, 'cust_01') ON CONFLICT DO NOTHING"),
            {"ns": namespace},
        )
        conn.execute(text(INSERT_SUBSCRIPTION), [{"ns": namespace, "id": i} for i in ids])


def never_synced(engine: Engine, namespace: str) -> list[str]:
    return [
        d.subscription_id
        for page in iter_due_pages(engine, NOW, namespace=namespace)
        for d in page
        if d.next_sync_after is None
    ]


def pending_rows(engine: Engine, namespace: str) -> list[str]:
    p = subscriptions_never_synced
    with engine.connect() as conn:
        return list(
            conn.scalars(select(p.c.subscription_id).where(p.c.namespace == namespace).order_by(p.c.subscription_id))
        )


def test_a_subscription_written_by_sql_is_never_synced_until_its_first_sync(db: Engine) -> None:
    ns = unique("ns")
    _insert_raw(db, ns, "s_raw", "s_other")
    assert never_synced(db, ns) == ["s_other", "s_raw"]
    with db.connect() as conn:
        assert overdue_summary(conn, NOW, namespace=ns).never_synced == 2

    seed_subscription(
        db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")), namespace=ns, id="s_sync"
    )
    assert never_synced(db, ns) == ["s_other", "s_raw", "s_sync"]
    sync_subscription(db, ns, "s_sync", as_of=t("2024-02-15"))  # the real sync path: no statement of its own
    assert never_synced(db, ns) == ["s_other", "s_raw"]

    with db.begin() as conn:
        write_sync_state(conn, ns, "s_raw", SyncState(False, None), NOW)
    assert never_synced(db, ns) == ["s_other"]
    with db.begin() as conn:  # a later sync (the upsert's update) leaves it synced
        write_sync_state(conn, ns, "s_raw", SyncState(True, t("2024-04-01")), NOW)
    assert never_synced(db, ns) == ["s_other"]
    with db.connect() as conn:
        assert overdue_summary(conn, NOW, namespace=ns).never_synced == 1


def test_deleting_the_sync_state_makes_it_never_synced_again(db: Engine) -> None:
    ns = unique("ns")
    _insert_raw(db, ns, "s_1", "s_2", "s_3")
    with db.begin() as conn:
        for sid in ("s_1", "s_2", "s_3"):
            write_sync_state(conn, ns, sid, SyncState(False, None), NOW)
        write_sync_state(conn, ns, "s_gone", SyncState(False, None), NOW)  # a state whose subscription is gone
    assert never_synced(db, ns) == []
    with db.begin() as conn:
        conn.execute(
            text("DELETE FROM subscription_sync_states WHERE namespace = :ns AND subscription_id <> 's_3'"), {"ns": ns}
        )
    assert never_synced(db, ns) == ["s_1", "s_2"]
    assert pending_rows(db, ns) == ["s_1", "s_2"]  # no row for a subscription that does not exist

    with db.begin() as conn:  # TRUNCATE fires no row trigger: its own trigger restores every row
        conn.execute(text("TRUNCATE subscription_sync_states"))
    assert never_synced(db, ns) == ["s_1", "s_2", "s_3"]


def test_deleting_or_renaming_a_subscription_moves_its_row(db: Engine) -> None:
    ns = unique("ns")
    _insert_raw(db, ns, "s_1", "s_2", "s_3")
    with db.begin() as conn:
        write_sync_state(conn, ns, "s_new", SyncState(False, None), NOW)  # a state for the key s_3 will take
        conn.execute(text("DELETE FROM subscriptions WHERE namespace = :ns AND id = 's_1'"), {"ns": ns})
        conn.execute(text("UPDATE subscriptions SET id = 's_new' WHERE namespace = :ns AND id = 's_3'"), {"ns": ns})
        conn.execute(text("UPDATE subscriptions SET id = 's_moved' WHERE namespace = :ns AND id = 's_2'"), {"ns": ns})
    assert pending_rows(db, ns) == ["s_moved"]
    assert never_synced(db, ns) == ["s_moved"]


def test_the_migration_backfills_and_downgrades_without_loss(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    assert migrate.upgrade(url, "0002") == "0002"
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        _insert_raw(engine, "acme", "s_never", "s_synced")
        with engine.begin() as conn:  # as the code of revision 0002 wrote it (no decision columns yet)
            conn.execute(
                text(
                    "INSERT INTO subscription_sync_states (namespace, subscription_id, has_billables, synced_at) "
                    "VALUES ('acme', 's_synced', false, :now)"
                ),
                {"now": NOW},
            )
        assert migrate.upgrade(url) == migrate.head_revision()
        assert pending_rows(engine, "acme") == ["s_never"]
        assert never_synced(engine, "acme") == ["s_never"]
        # derived data: the downgrade drops it without --allow-data-loss, and leaves no trigger behind
        assert migrate.downgrade(url, "0002") == "0002"
        with engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'subsync_%'")
            ).scalar_one()
        assert left == 0
        _insert_raw(engine, "acme", "s_later")  # written while downgraded: the upgrade's backfill finds it
        assert migrate.upgrade(url) == migrate.head_revision()
        assert pending_rows(engine, "acme") == ["s_later", "s_never"]
    finally:
        engine.dispose()


def test_a_bulk_insert_of_subscriptions_is_one_statement_and_skips_those_with_a_state(db: Engine) -> None:
    """An upstream bulk load (one INSERT … SELECT, as `bench --scale` seeds): the statement-level trigger adds
    one row per new subscription, except for a key whose sync state already exists."""
    ns = unique("ns")
    _insert_raw(db, ns, "a-1")
    with db.begin() as conn:
        write_sync_state(conn, ns, "b-2", SyncState(False, None), NOW)
        conn.execute(
            text(
                "INSERT INTO subscriptions (namespace, id, customer_id, name, currency, billing_cadence, "
                "billing_anchor, pro_rating_enabled, pro_rating_mode, active_from) SELECT :ns, 'b-' || g, 'cust_01', "
                "'Pro', 'USD', 'P1M', '2024-01-01Z', true, 'prorate_prices', '2024-01-01Z' FROM generate_series(1, 4) g"
            ),
            {"ns": ns},
        )
    assert pending_rows(db, ns) == ["a-1", "b-1", "b-3", "b-4"]
    assert never_synced(db, ns) == ["a-1", "b-1", "b-3", "b-4"]
