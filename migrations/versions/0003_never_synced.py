"""Subscriptions never synced, as rows: `subscriptions_never_synced`, kept by triggers (docs/sync.md §8.4).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

docs/scaling.md §3.2: "never synced" is the absence of a `subscription_sync_states` row, which no index can
find; this table holds the key of every subscription without a sync state, so `reconcile_due` reads them
through its primary key (O(never synced), not O(subscriptions)). Postgres triggers keep it, so every writer
of `subscriptions` (this project or another program, docs/contract.md §2) and of the sync states is covered
without a change to their statements. The upgrade backfills it. Written by hand; `worker/store/tables.py`
declares the same table (tests/store/test_migrations.py compares them); the triggers are DDL of this script.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What downgrade() destroys (docs/operations.md "Downgrades"): nothing — the table is derived (the keys of
#: subscriptions without a sync-state row), recomputed by this upgrade; dropping it loses no information.
DOWNGRADE_DROPS: tuple[tuple[str, str, str], ...] = ()

TABLE = "subscriptions_never_synced"

# Each (name, table, timing, function body). Statement-level triggers with transition tables serve bulk writers
# (an upstream load of a million subscriptions is one INSERT of pending rows); the sync-state INSERT trigger is
# per row, so it fires only when a row is really inserted (a first sync), never on the steady-state upsert's
# ON CONFLICT DO UPDATE. Lowercase trigger names fire after the foreign keys' "RI_..." triggers (alphabetical).
TRIGGERS: tuple[tuple[str, str, str, str], ...] = (
    (
        "subsync_never_synced_subscriptions_insert",
        "subscriptions",
        "AFTER INSERT ON subscriptions REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT",
        f"""
        INSERT INTO {TABLE} (namespace, subscription_id)
        SELECT i.namespace, i.id FROM inserted i
        WHERE NOT EXISTS (SELECT 1 FROM subscription_sync_states st
                          WHERE st.namespace = i.namespace AND st.subscription_id = i.id)
        ON CONFLICT DO NOTHING;
        RETURN NULL;
        """,
    ),
    (
        # a key change moves the pending row (ON UPDATE CASCADE); the new key may already have a sync state
        "subsync_never_synced_subscriptions_rekey",
        "subscriptions",
        "AFTER UPDATE OF namespace, id ON subscriptions FOR EACH ROW"
        " WHEN (OLD.namespace IS DISTINCT FROM NEW.namespace OR OLD.id IS DISTINCT FROM NEW.id)",
        f"""
        IF EXISTS (SELECT 1 FROM subscription_sync_states st
                   WHERE st.namespace = NEW.namespace AND st.subscription_id = NEW.id) THEN
            DELETE FROM {TABLE} WHERE namespace = NEW.namespace AND subscription_id = NEW.id;
        ELSE
            INSERT INTO {TABLE} (namespace, subscription_id) VALUES (NEW.namespace, NEW.id) ON CONFLICT DO NOTHING;
        END IF;
        RETURN NULL;
        """,
    ),
    (
        "subsync_never_synced_states_insert",
        "subscription_sync_states",
        "AFTER INSERT ON subscription_sync_states FOR EACH ROW",
        f"""
        DELETE FROM {TABLE} WHERE namespace = NEW.namespace AND subscription_id = NEW.subscription_id;
        RETURN NULL;
        """,
    ),
    (
        "subsync_never_synced_states_delete",
        "subscription_sync_states",
        "AFTER DELETE ON subscription_sync_states REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT",
        f"""
        INSERT INTO {TABLE} (namespace, subscription_id)
        SELECT s.namespace, s.id FROM deleted d JOIN subscriptions s ON s.namespace = d.namespace AND s.id = d.subscription_id
        WHERE NOT EXISTS (SELECT 1 FROM subscription_sync_states st
                          WHERE st.namespace = s.namespace AND st.subscription_id = s.id)
        ON CONFLICT DO NOTHING;
        RETURN NULL;
        """,
    ),
    (
        "subsync_never_synced_states_rekey",
        "subscription_sync_states",
        "AFTER UPDATE OF namespace, subscription_id ON subscription_sync_states FOR EACH ROW"
        " WHEN (OLD.namespace IS DISTINCT FROM NEW.namespace OR OLD.subscription_id IS DISTINCT FROM NEW.subscription_id)",
        f"""
        DELETE FROM {TABLE} WHERE namespace = NEW.namespace AND subscription_id = NEW.subscription_id;
        INSERT INTO {TABLE} (namespace, subscription_id)
        SELECT s.namespace, s.id FROM subscriptions s WHERE s.namespace = OLD.namespace AND s.id = OLD.subscription_id
        ON CONFLICT DO NOTHING;
        RETURN NULL;
        """,
    ),
    (
        # row triggers do not see a TRUNCATE: with no sync state left, every subscription is never synced
        "subsync_never_synced_states_truncate",
        "subscription_sync_states",
        "AFTER TRUNCATE ON subscription_sync_states FOR EACH STATEMENT",
        f"""
        INSERT INTO {TABLE} (namespace, subscription_id) SELECT namespace, id FROM subscriptions
        ON CONFLICT DO NOTHING;
        RETURN NULL;
        """,
    ),
)

BACKFILL = f"""
INSERT INTO {TABLE} (namespace, subscription_id)
SELECT s.namespace, s.id FROM subscriptions s
WHERE NOT EXISTS (SELECT 1 FROM subscription_sync_states st WHERE st.namespace = s.namespace AND st.subscription_id = s.id)
"""


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "subscription_id", name="pk_subscriptions_never_synced"),
        sa.ForeignKeyConstraint(
            ["namespace", "subscription_id"],
            ["subscriptions.namespace", "subscriptions.id"],
            name="fk_subscriptions_never_synced_subscription",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
    )
    # Writers of either table wait while the triggers are created and the table filled, so no write slips
    # between the backfill and the first trigger firing.
    op.execute("LOCK TABLE subscriptions, subscription_sync_states IN SHARE ROW EXCLUSIVE MODE")
    for name, _table, timing, body in TRIGGERS:
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN{body}END;\n$$")
        op.execute(f"CREATE TRIGGER {name} {timing} EXECUTE FUNCTION {name}()")
    op.execute(BACKFILL)


def downgrade() -> None:
    for name, table, _timing, _body in reversed(TRIGGERS):
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_table(TABLE)
