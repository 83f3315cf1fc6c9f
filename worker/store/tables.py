"""SQLAlchemy Core tables for every table of CONTRACT §2.

This module is the single source of truth for the schema *shape*; the hand-written
Alembic migrations in `migrations/versions/` must produce exactly this (a test compares
them). Change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

metadata = MetaData()

Timestamp = TIMESTAMP(timezone=True)


def _created_at() -> Column[object]:
    return Column("created_at", Timestamp, nullable=False, server_default=text("now()"))


def _updated_at() -> Column[object]:
    return Column("updated_at", Timestamp, nullable=False, server_default=text("now()"))


def _deleted_at() -> Column[object]:
    return Column("deleted_at", Timestamp, nullable=True)


# --- owned upstream (the subscription service writes them) -----------------------------------

customers = Table(
    "customers",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("name", Text, nullable=True),
    _deleted_at(),
    _created_at(),
    _updated_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_customers"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("billing_cadence", Text, nullable=False),
    Column("billing_anchor", Timestamp, nullable=False),
    Column("pro_rating_enabled", Boolean, nullable=False),
    Column("pro_rating_mode", Text, nullable=False),
    Column("active_from", Timestamp, nullable=False),
    Column("active_to", Timestamp, nullable=True),
    _deleted_at(),
    _created_at(),
    _updated_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_subscriptions"),
    ForeignKeyConstraint(
        ["namespace", "customer_id"],
        ["customers.namespace", "customers.id"],
        name="fk_subscriptions_customer",
    ),
    Index("ix_subscriptions_customer", "namespace", "customer_id"),
)

subscription_phases = Table(
    "subscription_phases",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("subscription_id", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("active_from", Timestamp, nullable=False),
    Column("sort_hint", Integer, nullable=True),
    _deleted_at(),
    _created_at(),
    _updated_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_subscription_phases"),
    ForeignKeyConstraint(
        ["namespace", "subscription_id"],
        ["subscriptions.namespace", "subscriptions.id"],
        name="fk_subscription_phases_subscription",
        ondelete="CASCADE",
    ),
    Index("ix_subscription_phases_subscription", "namespace", "subscription_id"),
)

subscription_items = Table(
    "subscription_items",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("phase_id", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("active_from", Timestamp, nullable=False),
    Column("active_to", Timestamp, nullable=True),
    Column("annotations", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("rate_card", JSONB, nullable=False),
    _deleted_at(),
    _created_at(),
    _updated_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_subscription_items"),
    ForeignKeyConstraint(
        ["namespace", "phase_id"],
        ["subscription_phases.namespace", "subscription_phases.id"],
        name="fk_subscription_items_phase",
        ondelete="CASCADE",
    ),
    Index("ix_subscription_items_phase", "namespace", "phase_id"),
)

# --- owned by this project (billing side) ------------------------------------------------------

invoices = Table(
    "invoices",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("immutable", Boolean, nullable=False, server_default=text("false")),
    Column("number", Text, nullable=True),
    _created_at(),
    _updated_at(),
    _deleted_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_invoices"),
    ForeignKeyConstraint(
        ["namespace", "customer_id"],
        ["customers.namespace", "customers.id"],
        name="fk_invoices_customer",
    ),
    CheckConstraint("type IN ('gathering', 'standard')", name="ck_invoices_type"),
    Index(
        "uq_invoices_one_gathering_per_currency",
        "namespace",
        "customer_id",
        "currency",
        unique=True,
        postgresql_where=text("type = 'gathering' AND deleted_at IS NULL"),
    ),
)

split_line_groups = Table(
    "split_line_groups",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("unique_reference_id", Text, nullable=True),
    Column("subscription_id", Text, nullable=True),
    Column("subscription_phase_id", Text, nullable=True),
    Column("subscription_item_id", Text, nullable=True),
    Column("billing_period_start", Timestamp, nullable=True),
    Column("billing_period_end", Timestamp, nullable=True),
    Column("service_period_start", Timestamp, nullable=False),
    Column("service_period_end", Timestamp, nullable=False),
    Column("price", JSONB, nullable=True),
    Column("feature_key", Text, nullable=True),
    Column("discounts", JSONB, nullable=True),
    Column("tax_config", JSONB, nullable=True),
    _created_at(),
    _updated_at(),
    _deleted_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_split_line_groups"),
    Index("ix_split_line_groups_subscription", "namespace", "subscription_id"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("invoice_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("managed_by", Text, nullable=False),
    Column("unique_reference_id", Text, nullable=True),
    Column("split_line_group_id", Text, nullable=True),
    Column("subscription_id", Text, nullable=True),
    Column("subscription_phase_id", Text, nullable=True),
    Column("subscription_item_id", Text, nullable=True),
    Column("billing_period_start", Timestamp, nullable=True),
    Column("billing_period_end", Timestamp, nullable=True),
    Column("service_period_start", Timestamp, nullable=False),
    Column("service_period_end", Timestamp, nullable=False),
    Column("invoice_at", Timestamp, nullable=False),
    Column("price", JSONB, nullable=True),
    Column("feature_key", Text, nullable=True),
    Column("discounts", JSONB, nullable=True),
    Column("tax_config", JSONB, nullable=True),
    Column("annotations", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("quantity", Numeric, nullable=True),
    _created_at(),
    _updated_at(),
    _deleted_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_invoice_lines"),
    ForeignKeyConstraint(
        ["namespace", "invoice_id"],
        ["invoices.namespace", "invoices.id"],
        name="fk_invoice_lines_invoice",
    ),
    ForeignKeyConstraint(
        ["namespace", "split_line_group_id"],
        ["split_line_groups.namespace", "split_line_groups.id"],
        name="fk_invoice_lines_split_line_group",
    ),
    Index("ix_invoice_lines_subscription", "namespace", "subscription_id"),
    Index("ix_invoice_lines_invoice", "namespace", "invoice_id"),
    Index("ix_invoice_lines_split_line_group", "namespace", "split_line_group_id"),
    Index(
        "uq_invoice_lines_unique_reference_id",
        "namespace",
        "unique_reference_id",
        unique=True,
        postgresql_where=text("deleted_at IS NULL AND unique_reference_id IS NOT NULL"),
    ),
)

invoice_validation_issues = Table(
    "invoice_validation_issues",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("invoice_id", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("component", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("path", Text, nullable=True),
    _created_at(),
    _deleted_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_invoice_validation_issues"),
    ForeignKeyConstraint(
        ["namespace", "invoice_id"],
        ["invoices.namespace", "invoices.id"],
        name="fk_invoice_validation_issues_invoice",
    ),
    Index("ix_invoice_validation_issues_invoice", "namespace", "invoice_id"),
)

subscription_sync_states = Table(
    "subscription_sync_states",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("subscription_id", Text, nullable=False),
    Column("has_billables", Boolean, nullable=False),
    Column("next_sync_after", Timestamp, nullable=True),
    Column("synced_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("namespace", "subscription_id", name="pk_subscription_sync_states"),
    Index("ix_subscription_sync_states_next_sync_after", "next_sync_after"),
)

#: Every project table, parents before children (handy for TRUNCATE and fixtures).
ALL_TABLES: tuple[Table, ...] = (
    customers,
    subscriptions,
    subscription_phases,
    subscription_items,
    invoices,
    split_line_groups,
    invoice_lines,
    invoice_validation_issues,
    subscription_sync_states,
)
