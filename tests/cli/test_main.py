"""The command line (docs/contract.md §5): exit codes, one JSON document on stdout, one-line errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from tests.builders import contract_example, printed_example
from worker.cli import app
from worker.store.tables import customers, subscription_items, subscription_phases, subscriptions

runner = CliRunner()


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, input=input)


def write(tmp_path: Path, document: dict[str, Any], name: str = "doc.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def counts(db: Engine) -> list[int]:
    with db.connect() as conn:
        return [
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (subscriptions, subscription_phases, subscription_items)
        ]


def test_customer_upsert_apply_get_delete(db: Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    result = invoke(cli_env, "customers", "upsert", "--namespace", "acme", "--id", "cust_01", "--name", "Acme")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "Acme"

    result = invoke(cli_env, "subscriptions", "apply", write(tmp_path, contract_example()))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == printed_example()

    result = invoke(cli_env, "subscriptions", "get", "--namespace", "acme", "--id", "sub_01", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == printed_example()

    result = invoke(cli_env, "subscriptions", "get", "--namespace", "acme", "--id", "sub_01", "--format", "table")
    assert result.exit_code == 0 and "platform-fee" in result.stdout

    result = invoke(
        cli_env, "subscriptions", "delete", "--namespace", "acme", "--id", "sub_01", "--at", "2024-05-01T02:00:00+02:00"
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"namespace": "acme", "id": "sub_01", "deleted_at": "2024-05-01T00:00:00Z"}


def test_every_command_names_database_and_broker_without_password(db: Engine, cli_env: dict[str, str]) -> None:
    env = cli_env | {"REDIS_URL": "redis://:hunter2@127.0.0.1:6390/3"}
    result = invoke(env, "-v", "subscriptions", "get", "--namespace", "acme", "--id", "nope")
    assert result.exit_code == 1
    announcement = json.loads(result.stderr.splitlines()[0])
    assert announcement["event"] == "subsync subscriptions get"
    assert announcement["broker"] == "127.0.0.1:6390/3"
    assert announcement["database"].endswith("/" + cli_env["DATABASE_URL"].rsplit("/", 1)[1].split("?")[0])
    assert "hunter2" not in result.stderr
    assert result.stderr.splitlines()[-1] == "error: subscription 'nope' does not exist in namespace 'acme'"
    assert result.stdout == ""


def test_invalid_document_exits_2_names_each_field_and_writes_nothing(
    db: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    invoke(cli_env, "customers", "upsert", "--namespace", "acme", "--id", "cust_01")
    document = contract_example()
    document["currency"] = "usd"
    document["phases"][0]["items"]["platform-fee"][0]["rate_card"]["price"]["amount"] = "-5"
    result = invoke(cli_env, "subscriptions", "apply", write(tmp_path, document))
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: currency: must be a three-letter ISO 4217 code in capitals, like USD",
        "error: phases[0].items.platform-fee[0].rate_card.price.amount: "
        'must be a non-negative decimal string, like "12.50"',
    ]
    assert result.stdout == ""
    assert counts(db) == [0, 0, 0]


def test_missing_customer_exits_1_and_writes_nothing(db: Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    result = invoke(cli_env, "subscriptions", "apply", write(tmp_path, contract_example()))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("error: customer 'cust_01' does not exist in namespace 'acme'")
    assert counts(db) == [0, 0, 0]


def test_apply_reads_stdin(db: Engine, cli_env: dict[str, str]) -> None:
    invoke(cli_env, "customers", "upsert", "--namespace", "acme", "--id", "cust_01")
    result = invoke(cli_env, "subscriptions", "apply", "-", input=json.dumps(contract_example()))
    assert result.exit_code == 0, result.stderr
    assert counts(db) == [1, 1, 1]


def test_bad_usage_exits_2(db: Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    assert invoke(cli_env, "subscriptions", "apply", str(tmp_path / "missing.json")).exit_code == 2
    assert invoke(cli_env, "subscriptions", "get", "--namespace", "acme").exit_code == 2
    assert invoke(cli_env, "subscriptions", "get", "--namespace", "ac/me", "--id", "x").exit_code == 2
    bad_time = invoke(cli_env, "subscriptions", "delete", "--namespace", "acme", "--id", "s", "--at", "yesterday")
    assert bad_time.exit_code == 2
    bad_deleted_at = invoke(
        cli_env, "customers", "upsert", "--namespace", "acme", "--id", "c", "--deleted-at", "2024-01-01"
    )
    assert bad_deleted_at.exit_code == 2
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 0


def test_invalid_configuration_exits_2(cli_env: dict[str, str]) -> None:
    result = invoke(cli_env | {"SUBSYNC_LOG_FORMAT": "xml"}, "db", "upgrade")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "error: SUBSYNC_LOG_FORMAT: must be one of: console, json"


def test_unreachable_database_is_one_line_exit_1(cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": "postgresql+psycopg://nobody:secret@127.0.0.1:1/nowhere"}
    result = invoke(env, "subscriptions", "get", "--namespace", "acme", "--id", "sub_01")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: database unavailable:")
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


def test_console_script_usage_error_is_one_line(cli_env: dict[str, str]) -> None:
    env = {**os.environ, **cli_env}
    completed = subprocess.run(
        [sys.executable, "-m", "worker", "subscriptions", "get", "--namespace", "acme"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.splitlines()[-1] == (
        "error: Missing option '--id'. (see 'subsync subscriptions get --help')"
    )
