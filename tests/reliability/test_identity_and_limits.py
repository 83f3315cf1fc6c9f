"""Issue 11 part A through the command line: period generation at the ends of time and the bound on
one sync's work (CONTRACT §3 limits, README "Guarantees")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from typer.testing import CliRunner, Result

from tests.sample_documents import contract_example, rate_card
from worker.cli import app
from worker.config import Settings
from worker.store.tables import invoice_lines, subscriptions

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
                "rate_card": rate_card({"type": "flat", "amount": "1", "payment_term": "in_advance"}, cadence="P1D"),
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
    assert Settings.model_fields["max_target_lines"].default == 100_000  # README "Period generation"
    bad = sync(cli_env | {"SUBSYNC_MAX_TARGET_LINES": "0"}, "2024-01-10T00:00:00Z")
    assert bad.exit_code == 2 and "SUBSYNC_MAX_TARGET_LINES" in errors(bad)[0]
