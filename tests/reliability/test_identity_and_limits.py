"""Issue 11 part A through the command line: period generation at the ends of time, the bound on one
sync's work, a subscription's immutable customer and currency, and customer upserts that change only
what they are given (docs/contract.md §3 limits, docs/sync.md §3.11)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from typer.testing import CliRunner, Result

from tests.builders import contract_example, rate_card
from worker.cli import app
from worker.config import Settings
from worker.store.tables import customers, invoice_lines, subscription_items, subscriptions

runner = CliRunner()
FEE_PATH = ("phases", 0, "items", "platform-fee", 0, "rate_card", "billing_cadence")


def cli(env: dict[str, str], *args: str) -> Result:
    return runner.invoke(app, list(args), env=env)


def errors(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def apply(env: dict[str, str], tmp_path: Path, doc: dict[str, Any]) -> Result:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    return cli(env, "subscriptions", "apply", str(path), "--format", "json")


def customer(env: dict[str, str], customer_id: str, *args: str) -> Result:
    return cli(env, "customers", "upsert", "--namespace", "acme", "--id", customer_id, *args, "--format", "json")


def count(db: Engine, table: Any) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def sync(env: dict[str, str], as_of: str, *extra: str) -> Result:
    return cli(env, "sync", "--namespace", "acme", "--subscription", "sub_01", "--as-of", as_of, *extra)


# --- period generation -------------------------------------------------------------------------


def test_sub_second_cadences_are_refused_naming_the_field(db: Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    assert customer(cli_env, "cust_01").exit_code == 0
    for text in ("PT0.0000001S", "PT0.5S"):
        for path, field in ((("billing_cadence",), "billing_cadence"), (FEE_PATH, "rate_card.billing_cadence")):
            doc = contract_example()
            target: Any = doc
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = text
            result = apply(cli_env, tmp_path, doc)
            assert result.exit_code == 2, (text, field, result.stderr)
            [line] = errors(result)
            assert field in line and "1 second" in line, line
    assert count(db, subscriptions) == 0


def test_a_huge_cadence_bills_each_period_once_and_stops_before_the_year_10000(
    db: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert customer(cli_env, "cust_01").exit_code == 0
    doc = contract_example()
    for key in ("billing_anchor", "active_from"):
        doc[key] = "1970-01-01T00:00:00Z"
    doc["billing_cadence"] = "P4000Y"
    doc["phases"][0]["active_from"] = "1970-01-01T00:00:00Z"
    version = doc["phases"][0]["items"]["platform-fee"][0]
    version["active_from"] = "1970-01-01T00:00:00Z"
    version["rate_card"]["billing_cadence"] = "P4000Y"
    assert apply(cli_env, tmp_path, doc).exit_code == 0
    result = sync(cli_env, "9980-01-01T00:00:00Z", "--format", "json")
    assert result.exit_code == 0, result.stderr
    periods = [p["service_period"] for p in json.loads(result.stdout)["patches"]]
    # [1970, 5970) and [5970, 9970); the next period would end in 13970: not generated (it used to be
    # clamped to the end of 9999 and written 999 more times)
    assert periods == [
        {"from": "1970-01-01T00:00:00Z", "to": "5970-01-01T00:00:00Z"},
        {"from": "5970-01-01T00:00:00Z", "to": "9970-01-01T00:00:00Z"},
    ]
    assert count(db, invoice_lines) == 2
    assert json.loads(sync(cli_env, "9998-12-31T00:00:00Z", "--format", "json").stdout)["patches"] == []


# --- the bound on one sync -----------------------------------------------------------------------


def test_a_sync_that_would_plan_too_many_lines_fails_naming_the_subscription_and_the_limit(
    db: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert customer(cli_env, "cust_01").exit_code == 0
    doc = contract_example()
    doc["phases"][0]["items"] = {
        f"daily-{i}": [
            {
                "active_from": "2024-01-01T00:00:00Z",
                "active_to": None,
                "annotations": {},
                "rate_card": rate_card(
                    "Daily fee", {"type": "flat", "amount": "1", "payment_term": "in_advance"}, cadence="P1D"
                ),
            }
        ]
        for i in range(200)
    }
    doc["billing_cadence"] = "P1D"
    assert apply(cli_env, tmp_path, doc).exit_code == 0
    env = cli_env | {"SUBSYNC_MAX_TARGET_LINES": "5000"}
    # Years later every daily item would plan 1,001 periods (200,200 lines): stopped at the 5,001st.
    for extra in ((), ("--dry-run",)):
        result = sync(env, "2030-01-01T00:00:00Z", *extra)
        assert result.exit_code == 1, result.stderr
        assert errors(result) == [
            "error: subscription sub_01 needs more than 5000 target lines in one sync"
            " (the limit SUBSYNC_MAX_TARGET_LINES=5000)"
        ]
    assert count(db, invoice_lines) == 0
    # within the limit the same subscription syncs normally: 10 days of 200 items
    ok = sync(env, "2024-01-10T00:00:00Z", "--format", "json")
    assert ok.exit_code == 0, ok.stderr
    assert count(db, invoice_lines) == 200 * 10
    assert Settings.model_fields["max_target_lines"].default == 100_000  # docs/sync.md §3.11
    bad = sync(cli_env | {"SUBSYNC_MAX_TARGET_LINES": "0"}, "2024-01-10T00:00:00Z")
    assert bad.exit_code == 2 and "SUBSYNC_MAX_TARGET_LINES" in errors(bad)[0]


# --- identity --------------------------------------------------------------------------------------


def test_a_subscription_keeps_its_customer_and_currency(db: Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    for who in ("cust_01", "cust_02"):
        assert customer(cli_env, who).exit_code == 0
    assert apply(cli_env, tmp_path, contract_example()).exit_code == 0
    assert sync(cli_env, "2024-01-15T00:00:00Z").exit_code == 0
    before = cli(cli_env, "subscriptions", "get", "--namespace", "acme", "--id", "sub_01", "--format", "json").stdout

    changes = {
        "customer_id": (
            "cust_02",
            "cannot change the customer of subscription sub_01 (stored: cust_01, given: cust_02)",
        ),
        "currency": ("EUR", "cannot change the currency of subscription sub_01 (stored: USD, given: EUR)"),
    }
    for field, (value, message) in changes.items():
        doc = contract_example()
        doc[field] = value
        doc["name"] = "renamed"  # the rest of the document must not be written either
        result = apply(cli_env, tmp_path, doc)
        assert result.exit_code == 2, result.stderr
        assert errors(result) == [f"error: {field}: {message}"]
    both = contract_example() | {"customer_id": "cust_02", "currency": "EUR"}
    assert [line.split(":")[1].strip() for line in errors(apply(cli_env, tmp_path, both))] == [
        "customer_id",
        "currency",
    ]
    # a customer that does not exist: still the identity error, not "customer not found"
    ghost = apply(cli_env, tmp_path, contract_example() | {"customer_id": "nobody"})
    assert ghost.exit_code == 2 and "customer_id: cannot change" in errors(ghost)[0]

    # soft-deleted subscriptions keep their identity too
    assert cli(cli_env, "subscriptions", "delete", "--namespace", "acme", "--id", "sub_01").exit_code == 0
    deleted = apply(cli_env, tmp_path, contract_example() | {"customer_id": "cust_02"})
    assert deleted.exit_code == 2 and "customer_id: cannot change" in errors(deleted)[0]

    with db.connect() as conn:
        row = conn.execute(select(subscriptions.c.customer_id, subscriptions.c.currency, subscriptions.c.name)).one()
    assert tuple(row) == ("cust_01", "USD", "Pro plan")
    assert count(db, subscription_items) == 1
    # the same customer and currency are accepted (and un-delete the subscription)
    assert apply(cli_env, tmp_path, contract_example()).exit_code == 0
    after = cli(cli_env, "subscriptions", "get", "--namespace", "acme", "--id", "sub_01", "--format", "json").stdout
    assert json.loads(after) == json.loads(before)


# --- customer upserts ------------------------------------------------------------------------------


def test_a_customer_upsert_changes_only_what_it_is_given(db: Engine, cli_env: dict[str, str]) -> None:
    deleted_at = "2024-03-01T00:00:00Z"
    assert customer(cli_env, "c1", "--name", "Acme", "--deleted-at", deleted_at).exit_code == 0

    renamed = customer(cli_env, "c1", "--name", "Acme Corp")
    assert renamed.exit_code == 0, renamed.stderr
    assert json.loads(renamed.stdout)["name"] == "Acme Corp"
    assert json.loads(renamed.stdout)["deleted_at"] == deleted_at  # still deleted
    assert json.loads(customer(cli_env, "c1").stdout)["deleted_at"] == deleted_at

    both = customer(cli_env, "c1", "--undelete", "--deleted-at", deleted_at)
    assert both.exit_code == 2 and "--undelete" in errors(both)[0]
    assert json.loads(customer(cli_env, "c1").stdout)["deleted_at"] == deleted_at

    undeleted = customer(cli_env, "c1", "--undelete")
    assert undeleted.exit_code == 0, undeleted.stderr
    assert json.loads(undeleted.stdout)["deleted_at"] is None and json.loads(undeleted.stdout)["name"] == "Acme Corp"
    fresh = customer(cli_env, "c2", "--undelete")  # a new customer: not deleted, named by its id
    assert fresh.exit_code == 0 and json.loads(fresh.stdout)["deleted_at"] is None
    with db.connect() as conn:
        assert conn.execute(select(customers.c.id, customers.c.deleted_at).order_by(customers.c.id)).all() == [
            ("c1", None),
            ("c2", None),
        ]
