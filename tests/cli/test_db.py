"""`subsync db current`, `db history`, `db check` on scratch databases (`empty_database`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, pool, text
from typer.testing import CliRunner

from worker.cli import app
from worker.store import migrations

runner = CliRunner()


def invoke(url: str, *args: str) -> Any:
    return runner.invoke(app, ["db", *args], env={"DATABASE_URL": url, "SUBSYNC_LOG_FORMAT": "json"})


def test_current_and_check_follow_the_schema_up_and_down(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    head = migrations.head_revision()
    first = migrations.history()[-1].revision

    result = invoke(url, "current", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"current": None, "head": head, "at_head": False}
    result = invoke(url, "check")
    assert result.exit_code == 1 and result.stdout == ""
    assert f"error: the database has no schema (head is {head}): run `subsync db upgrade`" in result.stderr

    assert invoke(url, "upgrade").exit_code == 0
    result = invoke(url, "check", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"current": head, "head": head, "at_head": True}

    assert invoke(url, "downgrade", "--to", first).exit_code == 0
    result = invoke(url, "check")
    assert result.exit_code == 1
    assert f"error: the database schema is at {first}, head is {head}: run `subsync db upgrade`" in result.stderr
    assert json.loads(invoke(url, "current", "--format", "json").stdout)["current"] == first


def test_a_schema_from_a_newer_release_fails_the_check(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    migrations.upgrade(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = invoke(url, "check")
    assert result.exit_code == 1
    assert "the database schema is at 9999, which this release does not know" in result.stderr


def test_history_lists_every_migration_newest_first_and_marks_the_current_one(
    empty_database: Callable[[], str],
) -> None:
    url = empty_database()
    migrations.upgrade(url)
    result = invoke(url, "history", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["revision"] for r in rows] == [r.revision for r in migrations.history()]
    assert rows[0]["revision"] == migrations.head_revision() and rows[-1]["down_revision"] is None
    assert [r["down_revision"] for r in rows[:-1]] == [r["revision"] for r in rows[1:]]  # a chain
    assert [r["current"] for r in rows] == [True] + [False] * (len(rows) - 1)
    assert all(r["description"] for r in rows)
    table = invoke(url, "history", "--format", "table")
    assert table.exit_code == 0 and rows[0]["description"][:20] in table.stdout


def cli(url: str, *args: str) -> Any:
    return runner.invoke(app, list(args), env={"DATABASE_URL": url, "SUBSYNC_LOG_FORMAT": "json"})


def count(url: str, sql: str) -> int:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def test_a_downgrade_that_would_drop_rows_is_refused_unless_allowed(empty_database: Callable[[], str]) -> None:
    """docs/operations.md "Downgrades": credit data present, `--to 0001` exits 1 naming the tables and row
    counts and changes nothing; `--allow-data-loss` drops them; `--to base` with customers is refused too."""
    url = empty_database()
    migrations.upgrade(url)
    head = migrations.head_revision()
    assert cli(url, "customers", "upsert", "--namespace", "acme", "--id", "cust_01").exit_code == 0
    for gid in ("cgr_1", "cgr_2"):
        grant = ("--namespace", "acme", "--customer", "cust_01", "--currency", "USD", "--amount", "5", "--id", gid)
        assert cli(url, "credits", "grant", *grant).exit_code == 0

    result = invoke(url, "downgrade", "--to", "0001")
    assert result.exit_code == 1, result.stderr
    assert "would drop credit_grants (2 rows)" in result.stderr and "--allow-data-loss" in result.stderr
    assert "unexpected" not in result.stderr
    assert migrations.current_revision(url) == head and count(url, "SELECT count(*) FROM credit_grants") == 2

    result = invoke(url, "downgrade", "--to", "base")
    assert result.exit_code == 1 and "customers (1 row)" in result.stderr and "credit_grants (2 rows)" in result.stderr
    assert migrations.current_revision(url) == head

    result = invoke(url, "downgrade", "--to", "0001", "--allow-data-loss")
    assert result.exit_code == 0, result.stderr
    assert migrations.current_revision(url) == "0001"
    assert count(url, "SELECT count(*) FROM customers") == 1  # what 0001 keeps is kept
    assert invoke(url, "downgrade", "--to", "base").exit_code == 1  # the customer row still guards


def test_a_downgrade_target_that_is_empty_or_unknown_is_a_usage_error(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    migrations.upgrade(url)
    for target in ("", " ", "zzzz", migrations.head_revision() or "", "9999"):
        result = invoke(url, "downgrade", "--to", target)
        if target == migrations.head_revision():
            assert result.exit_code == 0  # already there: nothing to do
            continue
        assert result.exit_code == 2, (target, result.stderr)
        assert "--to" in result.stderr and "unexpected" not in result.stderr
    assert migrations.current_revision(url) == migrations.head_revision()


def test_upgrade_prints_the_migrations_it_applied_without_verbose(empty_database: Callable[[], str]) -> None:
    """Deploy logs show what `db upgrade` did (issue 21 item 12): one line per applied migration, oldest
    first, whatever the log level; none when already at head."""
    url = empty_database()
    revisions = list(reversed(migrations.history()))  # oldest first
    first = revisions[0].revision
    assert invoke(url, "upgrade").exit_code == 0 and invoke(url, "downgrade", "--to", first).exit_code == 0

    result = invoke(url, "upgrade")
    assert result.exit_code == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if line.startswith("applied migration ")]
    assert applied == [f"applied migration {r.revision}: {r.description}" for r in revisions[1:]]
    assert f"database schema at {migrations.head_revision()} (head)" in result.stdout

    again = invoke(url, "upgrade")
    assert again.exit_code == 0 and "applied migration" not in again.stdout
