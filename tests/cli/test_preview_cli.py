"""`subsync preview` and `subsync subscriptions apply --dry-run` on the command line (docs/sync.md §10.2):
JSON and 80-column tables, bad input exits 2, and nothing is ever written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from typer.testing import CliRunner

from tests.builders import apply, document, flat, item_version, rate_card, unique, usage
from worker.cli import app
from worker.store.tables import ALL_TABLES

runner = CliRunner()


def dump(db: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect() as conn:
        return {table.name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr) for table in ALL_TABLES}


def doc(ns: str, amount: str = "30", active_to: str | None = None) -> dict[str, Any]:
    return document(
        ns,
        {
            "fee": [item_version("2024-01-10T00:00:00Z", None, rate_card("Platform fee", flat(amount)), id="it_fee")],
            "api": [usage("it_api", "0.1", "2024-01-01T00:00:00Z")],
            "setup": [item_version("2024-01-01T00:00:00Z", None, rate_card("Setup", flat("99"), cadence=None))],
        },
        start="2024-01-01T00:00:00Z",
        active_to=active_to,
    )


def write(tmp_path: Path, data: dict[str, Any], name: str = "doc.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def fits(output: str) -> bool:
    return max(len(line) for line in output.splitlines()) <= 80


def test_preview_prints_the_timeline_and_writes_nothing(db: Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    ns = unique("cli-preview")
    apply(db, doc(ns))
    before = dump(db)
    args = ["preview", "--namespace", ns, "--subscription", "sub_1", "--from", "2024-01-01T00:00:00Z"]
    out = runner.invoke(app, [*args, "--to", "2024-06-15T00:00:00Z", "--format", "json"], env=cli_env)
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    created = {line["unique_reference_id"] for line in data["lines"] if line["change"] == "created"}
    assert "sub_1/default/setup/v[0]" in created and "sub_1/default/fee/v[0]/period[5]" in created
    first_fee = next(x for x in data["lines"] if x["unique_reference_id"] == "sub_1/default/fee/v[0]/period[0]")
    assert first_fee["amount"] == "21.29"  # 22 of 31 days of 30 (docs/sync.md §3.9)
    assert data["months"][0] == {"month": "2024-01", "currency": "USD", "lines": 2, "charges": 0, "total": "120.29"}
    assert dump(db) == before

    table = runner.invoke(
        app, [*args, "--to", "2024-06-15T00:00:00Z", "--format", "table"], env={**cli_env, "COLUMNS": "80"}
    )
    assert table.exit_code == 0, table.stderr
    assert fits(table.stdout) and "timeline" in table.stdout and "=" in table.stdout and "~" in table.stdout

    path = write(tmp_path, doc(ns, amount="50", active_to="2024-03-01T00:00:00Z"))
    changed = runner.invoke(
        app, ["preview", "--file", path, "--from", "2024-01-01T00:00:00Z", "--to", "2024-06-15T00:00:00Z"], env=cli_env
    )
    assert changed.exit_code == 0, changed.stderr
    fees = [x for x in json.loads(changed.stdout)["lines"] if "/fee/" in x["unique_reference_id"]]
    assert [x["amount"] for x in fees] == ["35.48", "50"]  # cancelled March 1: two periods of the new price
    assert dump(db) == before


def test_preview_refuses_bad_input(db: Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    cases = [
        ["preview", "--to", "2024-02-01T00:00:00Z"],
        ["preview", "--subscription", "s", "--to", "2024-02-01T00:00:00Z"],
        ["preview", "--namespace", "n", "--subscription", "s", "--file", "x.json", "--to", "2024-02-01T00:00:00Z"],
        [
            "preview",
            "--namespace",
            "n",
            "--subscription",
            "s",
            "--from",
            "2024-03-01T00:00:00Z",
            "--to",
            "2024-02-01T00:00:00Z",
        ],
        ["preview", "--namespace", "n", "--subscription", "s", "--to", "yesterday"],
        ["preview", "--file", write(tmp_path, {"namespace": "n"}), "--to", "2024-02-01T00:00:00Z"],
    ]
    for args in cases:
        out = runner.invoke(app, args, env=cli_env)
        assert out.exit_code == 2, (args, out.stdout, out.stderr)
        assert "error:" in out.stderr.lower()  # click usage errors print "Error:" when invoked through the app


def test_apply_dry_run_prints_the_plan_and_writes_nothing(db: Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    ns = unique("cli-dry")
    apply(db, doc(ns))
    synced = runner.invoke(
        app, ["sync", "--namespace", ns, "--subscription", "sub_1", "--as-of", "2024-02-15T00:00:00Z"], env=cli_env
    )
    assert synced.exit_code == 0, synced.stderr
    before = dump(db)
    path = write(tmp_path, doc(ns, amount="60"))
    out = runner.invoke(app, ["subscriptions", "apply", "--dry-run", path, "--format", "json"], env=cli_env)
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["result"] == "replaced" and data["sync"]["dry_run"] is True
    reasons = {(p["op"], p["reason"]) for p in data["sync"]["patches"]}
    assert ("line_update", "prorate") in reasons  # the new price reaches the lines already there
    assert dump(db) == before

    table = runner.invoke(
        app, ["subscriptions", "apply", "--dry-run", path, "--format", "table"], env={**cli_env, "COLUMNS": "80"}
    )
    # Three id columns (identity, line, invoice) may not fit 80 columns once shortened as far as they may be: the
    # renderer then prints the table wider rather than cut what tells rows apart (docs/contract.md §5).
    assert table.exit_code == 0 and "dry run" in table.stdout
    shown = {p["unique_reference_id"].rsplit("/", 1)[-1] for p in data["sync"]["patches"]}
    assert shown and all(part in table.stdout for part in shown)  # every period index shows, whole

    bad = runner.invoke(
        app, ["subscriptions", "apply", "--dry-run", write(tmp_path, {"id": "x"}, "bad.json")], env=cli_env
    )
    assert bad.exit_code == 2 and "error:" in bad.stderr
    assert dump(db) == before
