"""The recorded decision of a sync that wrote nothing: three nullable columns of `subscription_sync_states`
(docs/sync.md §8.6).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

`decision_digest` is the digest of everything the decision read, `[decision_holds_from, decision_holds_until)`
the `as_of` window over which the same inputs decide the same; a later sync in that window whose read digests
the same is not decided again. Written by hand; `worker/store/tables.py` declares the same columns
(tests/store/test_migrations.py compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What downgrade() destroys (docs/operations.md "Downgrades"): nothing that cannot be recomputed — a dropped
#: token only makes the next sync of each subscription decide in full again.
DOWNGRADE_DROPS: tuple[tuple[str, str, str], ...] = ()

_TABLE = "subscription_sync_states"


def upgrade() -> None:
    op.add_column(_TABLE, sa.Column("decision_digest", sa.Text(), nullable=True))
    op.add_column(_TABLE, sa.Column("decision_holds_from", sa.TIMESTAMP(timezone=True), nullable=True))
    op.add_column(_TABLE, sa.Column("decision_holds_until", sa.TIMESTAMP(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column(_TABLE, "decision_holds_until")
    op.drop_column(_TABLE, "decision_holds_from")
    op.drop_column(_TABLE, "decision_digest")
