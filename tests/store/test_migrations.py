"""Migrations: they apply to an empty database, downgrade cleanly, and match worker/store/tables.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool, text

from worker.store import migrations as migrate
from worker.store.tables import ALL_TABLES, metadata

PROJECT_TABLES = {table.name for table in ALL_TABLES}


def table_names(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_every_contract_table_is_defined() -> None:
    assert (
        set(metadata.tables)
        == PROJECT_TABLES
        == {
            "customers",
            "subscriptions",
            "subscription_phases",
            "subscription_items",
            "invoices",
            "invoice_lines",
            "split_line_groups",
            "invoice_validation_issues",
            "subscription_sync_states",
            "subscriptions_never_synced",  # a project addition (migration 0003, docs/contract.md §2)
            "charges",
            "charge_runs",
            "credit_grants",
            "credit_allocations",
        }
    )


def test_credits_migration_keeps_existing_subscriptions_invoice_only_and_downgrades_to_0001(
    empty_database: Callable[[], str],
) -> None:
    """docs/credits.md §2.2: existing rows become `invoice_only`; 0002 undoes to exactly the 0001 schema."""
    url = empty_database()
    assert migrate.upgrade(url, "0001") == "0001"
    catalog_0001 = catalog(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO customers (namespace, id) VALUES ('acme', 'cust_01')"))
            conn.execute(
                text(
                    "INSERT INTO subscriptions (namespace, id, customer_id, name, currency, billing_cadence, "
                    "billing_anchor, pro_rating_enabled, pro_rating_mode, active_from) VALUES ('acme', 'sub_01', "
                    "'cust_01', 'Pro', 'USD', 'P1M', '2024-01-01Z', true, 'prorate_prices', '2024-01-01Z')"
                )
            )
        assert migrate.upgrade(url) == migrate.head_revision()
        with engine.connect() as conn:
            mode = conn.execute(text("SELECT settlement_mode FROM subscriptions WHERE id = 'sub_01'")).scalar_one()
        assert mode == "invoice_only"
        assert migrate.downgrade(url, "0001") == "0001"
        assert catalog(url) == catalog_0001
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    assert migrate.upgrade(url) == migrate.head_revision()
    assert table_names(url) == PROJECT_TABLES | {"alembic_version"}
    assert migrate.upgrade(url) == migrate.head_revision()  # idempotent

    assert migrate.downgrade(url, "base") is None
    assert table_names(url) == {"alembic_version"}
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            leftovers = conn.execute(
                text(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relname <> 'alembic_version' "
                    "AND c.relname NOT LIKE 'alembic_version%'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert leftovers == 0

    assert migrate.upgrade(url) == migrate.head_revision()
    assert table_names(url) == PROJECT_TABLES | {"alembic_version"}


def test_migrated_schema_has_no_diff_with_metadata(database_url: str) -> None:
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


_CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default, ordinal_position
        FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'alembic_version'
        ORDER BY table_name, ordinal_position""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> 'alembic_version' ORDER BY tablename, indexname""",
    "constraints": """
        SELECT rel.relname, con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = rel.relnamespace
        WHERE n.nspname = 'public' AND rel.relname <> 'alembic_version' ORDER BY rel.relname, con.conname""",
}


def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return {name: [tuple(row) for row in conn.execute(text(sql))] for name, sql in _CATALOG_QUERIES.items()}
    finally:
        engine.dispose()


def test_migrated_catalog_equals_create_all(database_url: str, empty_database: Callable[[], str]) -> None:
    """Stricter than compare_metadata: partial-index predicates, check constraints, FK actions, column order."""
    reference_url = empty_database()
    engine = create_engine(reference_url, poolclass=pool.NullPool)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
    migrated, reference = catalog(database_url), catalog(reference_url)
    for part in _CATALOG_QUERIES:
        assert migrated[part] == reference[part], part
    indexdefs = " ".join(row[2] for row in migrated["indexes"])
    assert "WHERE ((type = 'gathering'::text) AND (deleted_at IS NULL))" in indexdefs
    assert "WHERE ((deleted_at IS NULL) AND (unique_reference_id IS NOT NULL))" in indexdefs
    assert "WHERE ((advance_after IS NOT NULL) AND (deleted_at IS NULL))" in indexdefs
    assert "WHERE ((charge_id IS NOT NULL) AND (deleted_at IS NULL))" in indexdefs
