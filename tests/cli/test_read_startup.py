"""Start-up of the read commands (docs/performance.md "Read commands, third pass"): `run` builds only the
command its arguments name (`worker.cli.main.command_app`), which then behaves as in the whole app, and a read
command that logs nothing never loads structlog or rich."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.builders import apply, document, fee
from worker.cli import app, subscriptions

cli_main = importlib.import_module("worker.cli.main")  # the module: `worker.cli.main` is also its function
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]

SAME_AS_THE_WHOLE_APP = [
    ["lines", "--help"],
    ["-v", "lines", "--help"],
    ["--verbose", "subscriptions", "get", "--help"],
    ["subscriptions", "--help"],
    ["subscriptions"],
    ["subscriptions", "nosuch"],
    ["invoices", "list", "--help"],
    ["lines", "--bogus"],
    ["lines", "--namespace", "acme"],  # neither --customer nor --subscription: the command's own error
    ["lines", "--namespace", "acme", "--customer", "c", "--format", "xml"],
    ["subscriptions", "get", "--namespace", "bad id", "--id", "sub_1"],
    ["subscriptions", "get", "--namespace", "acme"],
]


@pytest.mark.parametrize("args", SAME_AS_THE_WHOLE_APP, ids=" ".join)
def test_the_command_alone_answers_as_the_whole_app(args: list[str]) -> None:
    alone = cli_main.command_app(args)
    assert alone is not app
    whole, pruned = runner.invoke(app, args), runner.invoke(alone, args)
    assert (pruned.exit_code, pruned.stdout, pruned.stderr) == (whole.exit_code, whole.stdout, whole.stderr)
    assert whole.exit_code in (0, 2) and (whole.stdout or whole.stderr)


def test_only_the_named_command_is_built_and_the_app_keeps_every_command() -> None:
    names = {*(c.name for c in app.registered_commands), *(g.name for g in app.registered_groups)}
    alone = cli_main.command_app(["-v", "subscriptions", "get", "--id", "x"])
    assert [g.name for g in alone.registered_groups] == ["subscriptions"] and alone.registered_commands == []
    assert [c.name for c in cli_main.command_app(["lines"]).registered_commands] == ["lines"]
    assert {*(c.name for c in app.registered_commands), *(g.name for g in app.registered_groups)} == names
    assert len(names) > 15


@pytest.mark.parametrize(
    "args", [[], ["-v"], ["--help"], ["-v", "--help"], ["--version"], ["--show-completion", "bash"], ["nosuch"]]
)
def test_root_help_version_completion_and_unknown_commands_get_the_whole_app(args: list[str]) -> None:
    assert cli_main.command_app(args) is app


def test_shell_completion_gets_the_whole_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_SUBSYNC_COMPLETE", "complete_bash")
    assert cli_main.command_app(["lines"]) is app


READ = """
import json, sys
import typer.main
built = []
build = typer.main.get_command_from_info
typer.main.get_command_from_info = lambda *a, **k: built.append(1) or build(*a, **k)
from worker.cli import run
code = run(sys.argv[1:])
loaded = [m for m in ("structlog", "rich") if m in sys.modules]
print(json.dumps({"code": code, "built": len(built), "loaded": loaded}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "commands"),
    [
        (["lines", "--namespace", "acme", "--subscription", "sub_1", "--format", "json"], 1),
        (  # the group's commands
            ["subscriptions", "get", "--namespace", "acme", "--id", "sub_1", "--format", "json"],
            len(subscriptions.app.registered_commands),
        ),
    ],
    ids=["lines", "subscriptions get"],
)
def test_a_read_command_builds_its_own_command_only_and_loads_no_logging_library(
    db: Engine, cli_env: dict[str, str], args: list[str], commands: int
) -> None:
    apply(db, document("acme", {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    env = {**os.environ, **cli_env}
    done = subprocess.run(
        [sys.executable, "-c", READ, *args], capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )
    report = json.loads(done.stderr.splitlines()[-1])
    assert report == {"code": 0, "built": commands, "loaded": []}, done.stderr
    out = json.loads(done.stdout)
    if args[0] == "lines":
        assert out == []  # the subscription was never synced
    else:
        assert (out["namespace"], out["id"], out["customer_id"]) == ("acme", "sub_1", "cust_1")
