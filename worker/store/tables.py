"""SQLAlchemy Core tables for every table of docs/contract.md §2.

This module is the single source of truth for the schema *shape*; the hand-written
Alembic migrations in `migrations/versions/` must produce exactly this (a test compares
them). Change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
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
    # docs/credits.md §2.2 (migration 0002): added last, so the column order matches the migrated table.
    Column("settlement_mode", Text, nullable=False, server_default=text("'invoice_only'")),
    PrimaryKeyConstraint("namespace", "id", name="pk_subscriptions"),
    CheckConstraint(
        "settlement_mode IN ('invoice_only', 'credit_then_invoice', 'credit_only')",
        name="ck_subscriptions_settlement_mode",
    ),
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
    # docs/credits.md §2.2 (migration 0002): charge lines; added last, as the migration adds them.
    Column("charge_id", Text, nullable=True),
    Column("amount", Numeric, nullable=True),
    Column("discounts_total", Numeric, nullable=True),
    Column("credits_total", Numeric, nullable=True),
    Column("total", Numeric, nullable=True),
    PrimaryKeyConstraint("namespace", "id", name="pk_invoice_lines"),
    ForeignKeyConstraint(
        ["namespace", "charge_id"],
        ["charges.namespace", "charges.id"],
        name="fk_invoice_lines_charge",
    ),
    CheckConstraint(
        "charge_id IS NULL OR (unique_reference_id IS NULL AND split_line_group_id IS NULL)",
        name="ck_invoice_lines_charge",
    ),
    Index(
        "uq_invoice_lines_charge",
        "namespace",
        "charge_id",
        unique=True,
        postgresql_where=text("charge_id IS NOT NULL AND deleted_at IS NULL"),
    ),
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
    # docs/sync.md §8.6, migration 0004: the recorded decision of a sync that wrote nothing (all three or none).
    Column("decision_digest", Text, nullable=True),
    Column("decision_holds_from", Timestamp, nullable=True),
    Column("decision_holds_until", Timestamp, nullable=True),
    PrimaryKeyConstraint("namespace", "subscription_id", name="pk_subscription_sync_states"),
    Index("ix_subscription_sync_states_next_sync_after", "next_sync_after"),
)

# docs/sync.md §8.4, migration 0003: the key of every subscription without a sync-state row, kept by Postgres
# triggers on `subscriptions` and `subscription_sync_states` (DDL of the migration, not declared here), so the
# never-synced half of the due scan reads it by its primary key instead of anti-joining every subscription.
subscriptions_never_synced = Table(
    "subscriptions_never_synced",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("subscription_id", Text, nullable=False),
    PrimaryKeyConstraint("namespace", "subscription_id", name="pk_subscriptions_never_synced"),
    ForeignKeyConstraint(
        ["namespace", "subscription_id"],
        ["subscriptions.namespace", "subscriptions.id"],
        name="fk_subscriptions_never_synced_subscription",
        ondelete="CASCADE",
        onupdate="CASCADE",
    ),
)

# --- charges and credits (docs/credits.md §2.2, migration 0002) ------------------------------------------

#: The allowed shapes of an allocation row (docs/credits.md §2.2), as one check constraint (migration 0002 spells it the same).
ALLOCATION_SHAPES = (
    "(kind = 'allocation' AND amount > 0 AND reverses_id IS NULL AND backfills_id IS NULL)"
    " OR (kind = 'correction' AND amount < 0 AND reverses_id IS NOT NULL AND backfills_id IS NULL)"
    " OR (kind = 'backfill' AND amount < 0 AND grant_id IS NULL AND reverses_id IS NOT NULL"
    " AND backfills_id IS NULL)"
    " OR (kind = 'backfill' AND amount > 0 AND grant_id IS NOT NULL AND backfills_id IS NOT NULL"
    " AND reverses_id IS NULL)"
)

charges = Table(
    "charges",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("subscription_id", Text, nullable=False),
    Column("subscription_phase_id", Text, nullable=False),
    Column("subscription_item_id", Text, nullable=False),
    Column("unique_reference_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("settlement_mode", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("feature_key", Text, nullable=True),
    Column("price", JSONB, nullable=False),
    Column("discounts", JSONB, nullable=True),
    Column("tax_config", JSONB, nullable=True),
    Column("annotations", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("pro_rating_enabled", Boolean, nullable=False),
    Column("pro_rating_mode", Text, nullable=False),
    Column("service_period_start", Timestamp, nullable=False),
    Column("service_period_end", Timestamp, nullable=False),
    Column("full_service_period_start", Timestamp, nullable=False),
    Column("full_service_period_end", Timestamp, nullable=False),
    Column("billing_period_start", Timestamp, nullable=False),
    Column("billing_period_end", Timestamp, nullable=False),
    Column("invoice_at", Timestamp, nullable=False),
    Column("amount_before_proration", Numeric, nullable=True),
    Column("amount_after_proration", Numeric, nullable=True),
    Column("quantity", Numeric, nullable=True),
    Column("rated_amount", Numeric, nullable=True),
    Column("advance_after", Timestamp, nullable=True),
    _created_at(),
    _updated_at(),
    _deleted_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_charges"),
    ForeignKeyConstraint(
        ["namespace", "customer_id"],
        ["customers.namespace", "customers.id"],
        name="fk_charges_customer",
    ),
    CheckConstraint("type IN ('flat_fee', 'usage_based')", name="ck_charges_type"),
    CheckConstraint("settlement_mode IN ('credit_then_invoice', 'credit_only')", name="ck_charges_settlement_mode"),
    CheckConstraint("status IN ('created', 'active', 'final', 'deleted')", name="ck_charges_status"),
    CheckConstraint("(status = 'deleted') = (deleted_at IS NOT NULL)", name="ck_charges_deleted"),
    CheckConstraint("type <> 'flat_fee' OR amount_after_proration IS NOT NULL", name="ck_charges_flat_amount"),
    CheckConstraint("type <> 'usage_based' OR feature_key IS NOT NULL", name="ck_charges_usage_feature_key"),
    Index(
        "uq_charges_unique_reference_id",
        "namespace",
        "unique_reference_id",
        unique=True,
        postgresql_where=text("deleted_at IS NULL"),
    ),
    Index("ix_charges_subscription", "namespace", "subscription_id"),
    Index("ix_charges_customer", "namespace", "customer_id"),
    Index(
        "ix_charges_due",
        "advance_after",
        "namespace",
        "customer_id",
        postgresql_where=text("advance_after IS NOT NULL AND deleted_at IS NULL"),
    ),
)

charge_runs = Table(
    "charge_runs",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("charge_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("service_period_start", Timestamp, nullable=False),
    Column("service_period_end", Timestamp, nullable=False),
    Column("quantity", Numeric, nullable=True),
    Column("amount", Numeric, nullable=False),
    Column("discounts_total", Numeric, nullable=False),
    Column("credits_total", Numeric, nullable=False),
    Column("total", Numeric, nullable=False),
    Column("invoice_id", Text, nullable=True),
    Column("line_id", Text, nullable=True),
    Column("booked_at", Timestamp, nullable=False),
    _created_at(),
    _updated_at(),
    _deleted_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_charge_runs"),
    ForeignKeyConstraint(
        ["namespace", "charge_id"],
        ["charges.namespace", "charges.id"],
        name="fk_charge_runs_charge",
    ),
    ForeignKeyConstraint(
        ["namespace", "invoice_id"],
        ["invoices.namespace", "invoices.id"],
        name="fk_charge_runs_invoice",
    ),
    Index(
        "uq_charge_runs_live",
        "namespace",
        "charge_id",
        unique=True,
        postgresql_where=text("deleted_at IS NULL"),
    ),
    Index("ix_charge_runs_charge", "namespace", "charge_id"),
    Index(
        "ix_charge_runs_invoice",
        "namespace",
        "invoice_id",
        postgresql_where=text("invoice_id IS NOT NULL"),
    ),
)

credit_grants = Table(
    "credit_grants",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("1")),
    # SQL NULL (not JSON null) for "usable by every charge" (docs/credits.md §2.2).
    Column("feature_keys", JSONB(none_as_null=True), nullable=True),
    Column("effective_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=True),
    Column("voided_at", Timestamp, nullable=True),
    _created_at(),
    _updated_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_credit_grants"),
    ForeignKeyConstraint(
        ["namespace", "customer_id"],
        ["customers.namespace", "customers.id"],
        name="fk_credit_grants_customer",
    ),
    CheckConstraint("amount > 0", name="ck_credit_grants_amount"),
    CheckConstraint("expires_at IS NULL OR expires_at > effective_at", name="ck_credit_grants_expires_at"),
    CheckConstraint("priority >= 0", name="ck_credit_grants_priority"),
    CheckConstraint(
        "feature_keys IS NULL OR (jsonb_typeof(feature_keys) = 'array' AND feature_keys <> '[]'::jsonb)",
        name="ck_credit_grants_feature_keys",
    ),
    Index("ix_credit_grants_customer", "namespace", "customer_id", "currency"),
)

credit_allocations = Table(
    "credit_allocations",
    metadata,
    Column("namespace", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("charge_id", Text, nullable=False),
    Column("run_id", Text, nullable=False),
    Column("grant_id", Text, nullable=True),
    Column("kind", Text, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("reverses_id", Text, nullable=True),
    Column("backfills_id", Text, nullable=True),
    Column("booked_at", Timestamp, nullable=False),
    _created_at(),
    PrimaryKeyConstraint("namespace", "id", name="pk_credit_allocations"),
    UniqueConstraint("seq", name="uq_credit_allocations_seq"),
    ForeignKeyConstraint(
        ["namespace", "charge_id"],
        ["charges.namespace", "charges.id"],
        name="fk_credit_allocations_charge",
    ),
    ForeignKeyConstraint(
        ["namespace", "run_id"],
        ["charge_runs.namespace", "charge_runs.id"],
        name="fk_credit_allocations_run",
    ),
    ForeignKeyConstraint(
        ["namespace", "grant_id"],
        ["credit_grants.namespace", "credit_grants.id"],
        name="fk_credit_allocations_grant",
    ),
    CheckConstraint(ALLOCATION_SHAPES, name="ck_credit_allocations_shape"),
    Index("ix_credit_allocations_run", "namespace", "run_id"),
    Index(
        "ix_credit_allocations_grant",
        "namespace",
        "grant_id",
        postgresql_where=text("grant_id IS NOT NULL"),
    ),
    Index(
        "ix_credit_allocations_advance",
        "namespace",
        "customer_id",
        "currency",
        "seq",
        postgresql_where=text("grant_id IS NULL"),
    ),
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
    subscriptions_never_synced,
    charges,
    charge_runs,
    credit_grants,
    credit_allocations,
)
