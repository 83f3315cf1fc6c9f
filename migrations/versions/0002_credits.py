"""Charges, charge runs, credit grants, credit allocations; settlement mode; charge columns of lines.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-20

docs/credits.md §2.2. Written by hand; `worker/store/tables.py` describes the same schema and tests/test_schema.py
checks that the two agree (new columns of existing tables are added last, in both).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = postgresql.TIMESTAMP(timezone=True)

#: What downgrade() destroys — (what, table, SQL condition of the rows that hold it) — counted by
#: `subsync db downgrade`, which refuses to drop rows without --allow-data-loss (docs/operations.md "Downgrades"):
#: the credit tables, a settlement mode other than the default, and the charge columns of lines.
DOWNGRADE_DROPS = (
    ("charges", "charges", "TRUE"),
    ("charge_runs", "charge_runs", "TRUE"),
    ("credit_grants", "credit_grants", "TRUE"),
    ("credit_allocations", "credit_allocations", "TRUE"),
    ("subscriptions.settlement_mode", "subscriptions", "settlement_mode <> 'invoice_only'"),
    (
        "invoice_lines.charge_id/amount/discounts_total/credits_total/total",
        "invoice_lines",
        "charge_id IS NOT NULL OR amount IS NOT NULL OR discounts_total IS NOT NULL OR credits_total IS NOT NULL"
        " OR total IS NOT NULL",
    ),
)

ALLOCATION_SHAPES = (
    "(kind = 'allocation' AND amount > 0 AND reverses_id IS NULL AND backfills_id IS NULL)"
    " OR (kind = 'correction' AND amount < 0 AND reverses_id IS NOT NULL AND backfills_id IS NULL)"
    " OR (kind = 'backfill' AND amount < 0 AND grant_id IS NULL AND reverses_id IS NOT NULL"
    " AND backfills_id IS NULL)"
    " OR (kind = 'backfill' AND amount > 0 AND grant_id IS NOT NULL AND backfills_id IS NOT NULL"
    " AND reverses_id IS NULL)"
)


def _created_at() -> sa.Column[object]:
    return sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()"))


def _updated_at() -> sa.Column[object]:
    return sa.Column("updated_at", TS, nullable=False, server_default=sa.text("now()"))


def _deleted_at() -> sa.Column[object]:
    return sa.Column("deleted_at", TS, nullable=True)


def upgrade() -> None:
    # Existing subscriptions become invoice_only (the default): today's behaviour, unchanged.
    op.add_column(
        "subscriptions",
        sa.Column("settlement_mode", sa.Text(), nullable=False, server_default=sa.text("'invoice_only'")),
    )
    op.create_check_constraint(
        "ck_subscriptions_settlement_mode",
        "subscriptions",
        "settlement_mode IN ('invoice_only', 'credit_then_invoice', 'credit_only')",
    )

    op.create_table(
        "charges",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("subscription_phase_id", sa.Text(), nullable=False),
        sa.Column("subscription_item_id", sa.Text(), nullable=False),
        sa.Column("unique_reference_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("settlement_mode", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("feature_key", sa.Text(), nullable=True),
        sa.Column("price", postgresql.JSONB(), nullable=False),
        sa.Column("discounts", postgresql.JSONB(), nullable=True),
        sa.Column("tax_config", postgresql.JSONB(), nullable=True),
        sa.Column("annotations", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("pro_rating_enabled", sa.Boolean(), nullable=False),
        sa.Column("pro_rating_mode", sa.Text(), nullable=False),
        sa.Column("service_period_start", TS, nullable=False),
        sa.Column("service_period_end", TS, nullable=False),
        sa.Column("full_service_period_start", TS, nullable=False),
        sa.Column("full_service_period_end", TS, nullable=False),
        sa.Column("billing_period_start", TS, nullable=False),
        sa.Column("billing_period_end", TS, nullable=False),
        sa.Column("invoice_at", TS, nullable=False),
        sa.Column("amount_before_proration", sa.Numeric(), nullable=True),
        sa.Column("amount_after_proration", sa.Numeric(), nullable=True),
        sa.Column("quantity", sa.Numeric(), nullable=True),
        sa.Column("rated_amount", sa.Numeric(), nullable=True),
        sa.Column("advance_after", TS, nullable=True),
        _created_at(),
        _updated_at(),
        _deleted_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_charges"),
        sa.ForeignKeyConstraint(
            ["namespace", "customer_id"],
            ["customers.namespace", "customers.id"],
            name="fk_charges_customer",
        ),
        sa.CheckConstraint("type IN ('flat_fee', 'usage_based')", name="ck_charges_type"),
        sa.CheckConstraint(
            "settlement_mode IN ('credit_then_invoice', 'credit_only')", name="ck_charges_settlement_mode"
        ),
        sa.CheckConstraint("status IN ('created', 'active', 'final', 'deleted')", name="ck_charges_status"),
        sa.CheckConstraint("(status = 'deleted') = (deleted_at IS NOT NULL)", name="ck_charges_deleted"),
        sa.CheckConstraint("type <> 'flat_fee' OR amount_after_proration IS NOT NULL", name="ck_charges_flat_amount"),
        sa.CheckConstraint("type <> 'usage_based' OR feature_key IS NOT NULL", name="ck_charges_usage_feature_key"),
    )
    op.create_index(
        "uq_charges_unique_reference_id",
        "charges",
        ["namespace", "unique_reference_id"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("ix_charges_subscription", "charges", ["namespace", "subscription_id"])
    op.create_index("ix_charges_customer", "charges", ["namespace", "customer_id"])
    op.create_index(
        "ix_charges_due",
        "charges",
        ["advance_after", "namespace", "customer_id"],
        postgresql_where=sa.text("advance_after IS NOT NULL AND deleted_at IS NULL"),
    )

    op.create_table(
        "charge_runs",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("charge_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("service_period_start", TS, nullable=False),
        sa.Column("service_period_end", TS, nullable=False),
        sa.Column("quantity", sa.Numeric(), nullable=True),
        sa.Column("amount", sa.Numeric(), nullable=False),
        sa.Column("discounts_total", sa.Numeric(), nullable=False),
        sa.Column("credits_total", sa.Numeric(), nullable=False),
        sa.Column("total", sa.Numeric(), nullable=False),
        sa.Column("invoice_id", sa.Text(), nullable=True),
        sa.Column("line_id", sa.Text(), nullable=True),
        sa.Column("booked_at", TS, nullable=False),
        _created_at(),
        _updated_at(),
        _deleted_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_charge_runs"),
        sa.ForeignKeyConstraint(
            ["namespace", "charge_id"],
            ["charges.namespace", "charges.id"],
            name="fk_charge_runs_charge",
        ),
        sa.ForeignKeyConstraint(
            ["namespace", "invoice_id"],
            ["invoices.namespace", "invoices.id"],
            name="fk_charge_runs_invoice",
        ),
    )
    op.create_index(
        "uq_charge_runs_live",
        "charge_runs",
        ["namespace", "charge_id"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("ix_charge_runs_charge", "charge_runs", ["namespace", "charge_id"])
    op.create_index(
        "ix_charge_runs_invoice",
        "charge_runs",
        ["namespace", "invoice_id"],
        postgresql_where=sa.text("invoice_id IS NOT NULL"),
    )

    op.create_table(
        "credit_grants",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("amount", sa.Numeric(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("feature_keys", postgresql.JSONB(), nullable=True),
        sa.Column("effective_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("voided_at", TS, nullable=True),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_credit_grants"),
        sa.ForeignKeyConstraint(
            ["namespace", "customer_id"],
            ["customers.namespace", "customers.id"],
            name="fk_credit_grants_customer",
        ),
        sa.CheckConstraint("amount > 0", name="ck_credit_grants_amount"),
        sa.CheckConstraint("expires_at IS NULL OR expires_at > effective_at", name="ck_credit_grants_expires_at"),
        sa.CheckConstraint("priority >= 0", name="ck_credit_grants_priority"),
        sa.CheckConstraint(
            "feature_keys IS NULL OR (jsonb_typeof(feature_keys) = 'array' AND feature_keys <> '[]'::jsonb)",
            name="ck_credit_grants_feature_keys",
        ),
    )
    op.create_index("ix_credit_grants_customer", "credit_grants", ["namespace", "customer_id", "currency"])

    op.create_table(
        "credit_allocations",
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("charge_id", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("grant_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("amount", sa.Numeric(), nullable=False),
        sa.Column("reverses_id", sa.Text(), nullable=True),
        sa.Column("backfills_id", sa.Text(), nullable=True),
        sa.Column("booked_at", TS, nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("namespace", "id", name="pk_credit_allocations"),
        sa.UniqueConstraint("seq", name="uq_credit_allocations_seq"),
        sa.ForeignKeyConstraint(
            ["namespace", "charge_id"],
            ["charges.namespace", "charges.id"],
            name="fk_credit_allocations_charge",
        ),
        sa.ForeignKeyConstraint(
            ["namespace", "run_id"],
            ["charge_runs.namespace", "charge_runs.id"],
            name="fk_credit_allocations_run",
        ),
        sa.ForeignKeyConstraint(
            ["namespace", "grant_id"],
            ["credit_grants.namespace", "credit_grants.id"],
            name="fk_credit_allocations_grant",
        ),
        sa.CheckConstraint(ALLOCATION_SHAPES, name="ck_credit_allocations_shape"),
    )
    op.create_index("ix_credit_allocations_run", "credit_allocations", ["namespace", "run_id"])
    op.create_index(
        "ix_credit_allocations_grant",
        "credit_allocations",
        ["namespace", "grant_id"],
        postgresql_where=sa.text("grant_id IS NOT NULL"),
    )
    op.create_index(
        "ix_credit_allocations_advance",
        "credit_allocations",
        ["namespace", "customer_id", "currency", "seq"],
        postgresql_where=sa.text("grant_id IS NULL"),
    )

    # Charge lines: added last to invoice_lines, after the charges table they reference.
    op.add_column("invoice_lines", sa.Column("charge_id", sa.Text(), nullable=True))
    op.add_column("invoice_lines", sa.Column("amount", sa.Numeric(), nullable=True))
    op.add_column("invoice_lines", sa.Column("discounts_total", sa.Numeric(), nullable=True))
    op.add_column("invoice_lines", sa.Column("credits_total", sa.Numeric(), nullable=True))
    op.add_column("invoice_lines", sa.Column("total", sa.Numeric(), nullable=True))
    op.create_foreign_key(
        "fk_invoice_lines_charge",
        "invoice_lines",
        "charges",
        ["namespace", "charge_id"],
        ["namespace", "id"],
    )
    op.create_check_constraint(
        "ck_invoice_lines_charge",
        "invoice_lines",
        "charge_id IS NULL OR (unique_reference_id IS NULL AND split_line_group_id IS NULL)",
    )
    op.create_index(
        "uq_invoice_lines_charge",
        "invoice_lines",
        ["namespace", "charge_id"],
        unique=True,
        postgresql_where=sa.text("charge_id IS NOT NULL AND deleted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_invoice_lines_charge", table_name="invoice_lines")
    op.drop_constraint("ck_invoice_lines_charge", "invoice_lines", type_="check")
    op.drop_constraint("fk_invoice_lines_charge", "invoice_lines", type_="foreignkey")
    for column in ("total", "credits_total", "discounts_total", "amount", "charge_id"):
        op.drop_column("invoice_lines", column)

    op.drop_index("ix_credit_allocations_advance", table_name="credit_allocations")
    op.drop_index("ix_credit_allocations_grant", table_name="credit_allocations")
    op.drop_index("ix_credit_allocations_run", table_name="credit_allocations")
    op.drop_table("credit_allocations")

    op.drop_index("ix_credit_grants_customer", table_name="credit_grants")
    op.drop_table("credit_grants")

    op.drop_index("ix_charge_runs_invoice", table_name="charge_runs")
    op.drop_index("ix_charge_runs_charge", table_name="charge_runs")
    op.drop_index("uq_charge_runs_live", table_name="charge_runs")
    op.drop_table("charge_runs")

    op.drop_index("ix_charges_due", table_name="charges")
    op.drop_index("ix_charges_customer", table_name="charges")
    op.drop_index("ix_charges_subscription", table_name="charges")
    op.drop_index("uq_charges_unique_reference_id", table_name="charges")
    op.drop_table("charges")

    op.drop_constraint("ck_subscriptions_settlement_mode", "subscriptions", type_="check")
    op.drop_column("subscriptions", "settlement_mode")
