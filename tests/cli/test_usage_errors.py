"""Usage errors on the command line exit 2 naming the option, never 1 "unexpected", and write nothing
(docs/contract.md §3 limits on every interface; docs/operations.md exit codes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.builders import contract_example
from tests.cli.test_credits_examples import CUST, NS, Cli, api_item, doc, written
from worker.cli import app

# Decimals the document parser refuses (docs/contract.md §3 "decimals", "digits"): another script's digits,
# full-width digits, `_` separators, surrounding spaces, exponents, and more than 38 digits.
BAD_DECIMALS = [
    "١٢٣",
    "１２３",
    "1_000",
    " 5 ",
    "5 ",
    "\t5",
    "1e3",
    "NaN",
    "Infinity",
    "1" + "0" * 38,
    "0." + "0" * 38 + "1",
]


@pytest.mark.parametrize("bad", BAD_DECIMALS)
def test_decimal_options_obey_the_contract(cli_env: dict[str, str], tmp_path: Path, db: Engine, bad: str) -> None:
    cli = Cli(cli_env, tmp_path, db)
    cli.apply(doc("credit_only", api_item()))
    cli.sync("2024-01-01T00:01:00Z")
    (usage,) = cli.charges().values()
    before = written(cli)
    grant = ("credits", "grant", *NS, *CUST, "--currency", "USD", "--amount", bad)
    assert "--amount" in cli.fail(2, *grant)
    assert "--quantity" in cli.fail(2, "charges", "set-quantity", *NS, "--charge", usage["id"], "--quantity", bad)
    assert written(cli) == before


def test_38_digit_decimal_options_are_accepted(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    amount = "9" * 36 + ".99"  # 38 digits, the contract's bound
    assert cli.grant(amount, "cgr_big")["amount"] == amount
    assert "at most 38 digits" in cli.fail(
        2, "credits", "grant", *NS, *CUST, "--currency", "USD", "--amount", "1" + amount
    )


# --- issue 21 item 7: usage errors exit 2, never 1 "unexpected" --------------------------------------------

runner = CliRunner()


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, input=input)


def usage_error(result: Any, option: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert option in result.stderr and "unexpected" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("seconds", ["1e400", "inf", "-inf", "nan", "-1", "1e12"])
def test_status_stuck_after_must_be_a_finite_number_of_seconds(cli_env: dict[str, str], seconds: str) -> None:
    usage_error(invoke(cli_env, "status", "--stuck-after", seconds), "--stuck-after")


LONE_SURROGATE = "caf\udce9"  # what a shell passes for the Latin-1 byte of "café" in a UTF-8 locale


def test_text_options_refuse_a_lone_surrogate_and_write_nothing(
    cli_env: dict[str, str], tmp_path: Path, db: Engine
) -> None:
    cli = Cli(cli_env, tmp_path, db)
    before = (cli.count("customers"), cli.count("credit_grants"))
    usage_error(invoke(cli_env, "customers", "upsert", *NS, "--id", "cust_02", "--name", LONE_SURROGATE), "--name")
    usage_error(invoke(cli_env, "customers", "upsert", *NS, "--id", "cust_02", "--name", "a\x00b"), "--name")
    grant = ("credits", "grant", *NS, *CUST, "--currency", "USD", "--amount", "1")
    usage_error(invoke(cli_env, *grant, "--feature", LONE_SURROGATE), "--feature")
    assert (cli.count("customers"), cli.count("credit_grants")) == before


@pytest.mark.parametrize("shape", ["[", '{"a":'])
def test_deeply_nested_json_on_stdin_is_a_usage_error(cli_env: dict[str, str], db: Engine, shape: str) -> None:
    deep = shape * 100_000 + "1" + ("]" if shape == "[" else "}") * 100_000
    result = invoke(cli_env, "subscriptions", "apply", "-", input=deep)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr


def test_times_print_with_four_digit_years(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    assert cli.run("charges", "advance", *NS, *CUST, "--as-of", "0001-01-01T00:00:00Z")["as_of"] == (
        "0001-01-01T00:00:00Z"
    )
    fraction = invoke(
        cli_env, "charges", "advance", *NS, *CUST, "--as-of", "0999-12-31T23:59:59.5Z", "--format", "json"
    )
    assert fraction.exit_code == 0 and json.loads(fraction.stdout)["as_of"] == "0999-12-31T23:59:59.5Z"


def test_embedded_stop_with_nothing_running_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"SUBSYNC_HOME": str(home), "DATABASE_URL": "", "REDIS_URL": "", "SUBSYNC_LOG_FORMAT": "json"}
    result = runner.invoke(app, ["embedded", "stop", "--format", "json"], env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["stopped"] == {"postgres": False, "redis": False}
    assert not home.exists() and list(tmp_path.iterdir()) == []
    home.mkdir()
    assert runner.invoke(app, ["embedded", "stop"], env=env).exit_code == 0
    assert list(home.iterdir()) == []  # no lock file either


# --- issue 21 item 8: apply FOLDER reports every unreadable entry ---------------------------------------------


def test_apply_folder_reports_dangling_symlinks_loops_and_fifos_as_failed(
    cli_env: dict[str, str], tmp_path: Path, db: Engine
) -> None:
    Cli(cli_env, tmp_path, db)  # the customer
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(contract_example() | {"customer_id": "cust_01"}))
    (folder / "dangling.json").symlink_to(tmp_path / "missing.json")
    (folder / "loop.json").symlink_to(folder / "loop.json")
    os.mkfifo(folder / "fifo.json")  # never opened: reading it would block
    (folder / "dir.json").mkdir()
    (folder / "notes.txt").write_text("not a document")  # not *.json: not an entry

    result = invoke(cli_env, "subscriptions", "apply", str(folder), "--format", "json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    results = {Path(d["source"]).name: d["result"] for d in report["documents"]}
    assert results == {
        "a.json": "created",
        "dangling.json": "failed",
        "dir.json": "failed",
        "fifo.json": "failed",
        "loop.json": "failed",
    }
    errors = {Path(d["source"]).name: " ".join(d.get("errors", [])) for d in report["documents"]}
    assert "No such file" in errors["dangling.json"] and "symbolic links" in errors["loop.json"]
    assert "a FIFO" in errors["fifo.json"] and "a directory" in errors["dir.json"]
    assert report["applied"] == 1 and report["failed"] == 4
    for name in ("dangling.json", "loop.json", "fifo.json", "dir.json"):
        assert name in result.stderr
