"""Initial schema: every table of docs/contract.md §2.

Revision ID: 0001
Revises:
Create Date: 2024-11-25

Written by hand; `worker/store/tables.py` describes the same schema and
tests/test_schema.py checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = postgresql.TIMESTAMP(timezone=True)

#: What downgrade() destroys — (what, table, SQL condition of the rows that hold it) — counted by
#: `subsync db downgrade`, which refuses to drop rows without --allow-data-loss (docs/operations.md "Downgrades").
DOWNGRADE_DROPS = tuple(
    (table, table, "TRUE")
    for table in (
        "customers",
        "subscriptions",
        "subscription_phases",
        "subscription_items",
        "invoices",
        "split_line_groups",
        "invoice_lines",
        "invoice_validation_issues",
        "subscription_sync_states",
    )
)


def _created_at() -> sa.Column[object]:
    return sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()"))


def _updated_at() -> sa.Column[object]:
    return sa.Column("updated_at", TS, nullable=False, server_default=sa.text("now()"))


def _deleted_at() -> sa.Column[object]:
    return sa.Column("deleted_at", TS, nullable=True)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        _deleted_at(),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_customers"),
    )

    op.create_table(
        "subscriptions",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("billing_cadence", sa.Text(), nullable=False),
        sa.Column("billing_anchor", TS, nullable=False),
        sa.Column("pro_rating_enabled", sa.Boolean(), nullable=False),
        sa.Column("pro_rating_mode", sa.Text(), nullable=False),
        sa.Column("active_from", TS, nullable=False),
        sa.Column("active_to", TS, nullable=True),
        _deleted_at(),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_subscriptions"),
        sa.ForeignKeyConstraint(
            ["namespace", "customer_id"],
            ["customers.namespace", "customers.id"],
            name="fk_subscriptions_customer",
        ),
    )
    op.create_index("ix_subscriptions_customer", "subscriptions", ["namespace", "customer_id"])

    op.create_table(
        "subscription_phases",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("active_from", TS, nullable=False),
        sa.Column("sort_hint", sa.Integer(), nullable=True),
        _deleted_at(),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_subscription_phases"),
        sa.ForeignKeyConstraint(
            ["namespace", "subscription_id"],
            ["subscriptions.namespace", "subscriptions.id"],
            name="fk_subscription_phases_subscription",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_subscription_phases_subscription", "subscription_phases", ["namespace", "subscription_id"])

    op.create_table(
        "subscription_items",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("phase_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("active_from", TS, nullable=False),
        sa.Column("active_to", TS, nullable=True),
        sa.Column("annotations", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("rate_card", postgresql.JSONB(), nullable=False),
        _deleted_at(),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_subscription_items"),
        sa.ForeignKeyConstraint(
            ["namespace", "phase_id"],
            ["subscription_phases.namespace", "subscription_phases.id"],
            name="fk_subscription_items_phase",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_subscription_items_phase", "subscription_items", ["namespace", "phase_id"])

    op.create_table(
        "invoices",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("immutable", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("number", sa.Text(), nullable=True),
        _created_at(),
        _updated_at(),
        _deleted_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_invoices"),
        sa.ForeignKeyConstraint(
            ["namespace", "customer_id"],
            ["customers.namespace", "customers.id"],
            name="fk_invoices_customer",
        ),
        sa.CheckConstraint("type IN ('gathering', 'standard')", name="ck_invoices_type"),
    )
    op.create_index(
        "uq_invoices_one_gathering_per_currency",
        "invoices",
        ["namespace", "customer_id", "currency"],
        unique=True,
        postgresql_where=sa.text("type = 'gathering' AND deleted_at IS NULL"),
    )

    op.create_table(
        "split_line_groups",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("unique_reference_id", sa.Text(), nullable=True),
        sa.Column("subscription_id", sa.Text(), nullable=True),
        sa.Column("subscription_phase_id", sa.Text(), nullable=True),
        sa.Column("subscription_item_id", sa.Text(), nullable=True),
        sa.Column("billing_period_start", TS, nullable=True),
        sa.Column("billing_period_end", TS, nullable=True),
        sa.Column("service_period_start", TS, nullable=False),
        sa.Column("service_period_end", TS, nullable=False),
        sa.Column("price", postgresql.JSONB(), nullable=True),
        sa.Column("feature_key", sa.Text(), nullable=True),
        sa.Column("discounts", postgresql.JSONB(), nullable=True),
        sa.Column("tax_config", postgresql.JSONB(), nullable=True),
        _created_at(),
        _updated_at(),
        _deleted_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_split_line_groups"),
    )
    op.create_index("ix_split_line_groups_subscription", "split_line_groups", ["namespace", "subscription_id"])

    op.create_table(
        "invoice_lines",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("invoice_id", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("managed_by", sa.Text(), nullable=False),
        sa.Column("unique_reference_id", sa.Text(), nullable=True),
        sa.Column("split_line_group_id", sa.Text(), nullable=True),
        sa.Column("subscription_id", sa.Text(), nullable=True),
        sa.Column("subscription_phase_id", sa.Text(), nullable=True),
        sa.Column("subscription_item_id", sa.Text(), nullable=True),
        sa.Column("billing_period_start", TS, nullable=True),
        sa.Column("billing_period_end", TS, nullable=True),
        sa.Column("service_period_start", TS, nullable=False),
        sa.Column("service_period_end", TS, nullable=False),
        sa.Column("invoice_at", TS, nullable=False),
        sa.Column("price", postgresql.JSONB(), nullable=True),
        sa.Column("feature_key", sa.Text(), nullable=True),
        sa.Column("discounts", postgresql.JSONB(), nullable=True),
        sa.Column("tax_config", postgresql.JSONB(), nullable=True),
        sa.Column("annotations", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("quantity", sa.Numeric(), nullable=True),
        _created_at(),
        _updated_at(),
        _deleted_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_invoice_lines"),
        sa.ForeignKeyConstraint(
            ["namespace", "invoice_id"],
            ["invoices.namespace", "invoices.id"],
            name="fk_invoice_lines_invoice",
        ),
        sa.ForeignKeyConstraint(
            ["namespace", "split_line_group_id"],
            ["split_line_groups.namespace", "split_line_groups.id"],
            name="fk_invoice_lines_split_line_group",
        ),
    )
    op.create_index("ix_invoice_lines_subscription", "invoice_lines", ["namespace", "subscription_id"])
    op.create_index("ix_invoice_lines_invoice", "invoice_lines", ["namespace", "invoice_id"])
    op.create_index("ix_invoice_lines_split_line_group", "invoice_lines", ["namespace", "split_line_group_id"])
    op.create_index(
        "uq_invoice_lines_unique_reference_id",
        "invoice_lines",
        ["namespace", "unique_reference_id"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL AND unique_reference_id IS NOT NULL"),
    )

    op.create_table(
        "invoice_validation_issues",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("invoice_id", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("component", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        _created_at(),
        _deleted_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_invoice_validation_issues"),
        sa.ForeignKeyConstraint(
            ["namespace", "invoice_id"],
            ["invoices.namespace", "invoices.id"],
            name="fk_invoice_validation_issues_invoice",
        ),
    )
    op.create_index("ix_invoice_validation_issues_invoice", "invoice_validation_issues", ["namespace", "invoice_id"])

    op.create_table(
        "subscription_sync_states",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("has_billables", sa.Boolean(), nullable=False),
        sa.Column("next_sync_after", TS, nullable=True),
        sa.Column("synced_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "subscription_id", name="pk_subscription_sync_states"),
    )
    op.create_index("ix_subscription_sync_states_next_sync_after", "subscription_sync_states", ["next_sync_after"])


def downgrade() -> None:
    op.drop_index("ix_subscription_sync_states_next_sync_after", table_name="subscription_sync_states")
    op.drop_table("subscription_sync_states")

    op.drop_index("ix_invoice_validation_issues_invoice", table_name="invoice_validation_issues")
    op.drop_table("invoice_validation_issues")

    op.drop_index("uq_invoice_lines_unique_reference_id", table_name="invoice_lines")
    op.drop_index("ix_invoice_lines_split_line_group", table_name="invoice_lines")
    op.drop_index("ix_invoice_lines_invoice", table_name="invoice_lines")
    op.drop_index("ix_invoice_lines_subscription", table_name="invoice_lines")
    op.drop_table("invoice_lines")

    op.drop_index("ix_split_line_groups_subscription", table_name="split_line_groups")
    op.drop_table("split_line_groups")

    op.drop_index("uq_invoices_one_gathering_per_currency", table_name="invoices")
    op.drop_table("invoices")

    op.drop_index("ix_subscription_items_phase", table_name="subscription_items")
    op.drop_table("subscription_items")

    op.drop_index("ix_subscription_phases_subscription", table_name="subscription_phases")
    op.drop_table("subscription_phases")

    op.drop_index("ix_subscriptions_customer", table_name="subscriptions")
    op.drop_table("subscriptions")

    op.drop_table("customers")
