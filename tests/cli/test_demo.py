"""`subsync demo` end to end in-process (on the test database and a private Redis key namespace)."""

from __future__ import annotations

import json

from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.builders import comparable
from worker.cli import app

runner = CliRunner()


def test_demo_prints_the_lines_and_is_idempotent(db: Engine, cli_env: dict[str, str], broker_namespace: str) -> None:
    env = {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace}
    first = runner.invoke(app, ["demo", "--format", "json"], env=env)
    assert first.exit_code == 0, first.stderr
    lines = json.loads(first.stdout)
    refs = [line["unique_reference_id"] for line in lines]
    assert any("/launch/platform-fee/" in r for r in refs) and any("/growth/api-calls/" in r for r in refs)
    assert {line["invoice_type"] for line in lines} == {"standard", "gathering"}  # due lines were invoiced
    second = runner.invoke(app, ["demo", "--format", "json"], env=env)
    assert second.exit_code == 0, second.stderr
    assert comparable(json.loads(second.stdout)) == comparable(lines)
    assert [line["id"] for line in json.loads(second.stdout)] == [line["id"] for line in lines]
    table = runner.invoke(app, ["demo", "--format", "table"], env=env)
    # the table names the subscription once (in its title) and each line by the rest of its identity
    assert table.exit_code == 0 and "demo-subscription/" in table.stdout
    assert "growth/platform-fee/v[0]/period[0]" in table.stdout
