"""`subsync customers apply` (issue 24): customer records in bulk from files, folders or stdin (JSON objects
or JSON lines), one transaction each, with the report and exit codes of `subscriptions apply`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from typer.testing import CliRunner

from worker.cli import app
from worker.store.tables import customers

runner = CliRunner()


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, input=input)


def stored(db: Engine, namespace: str) -> dict[str, tuple[str, bool]]:
    with db.connect() as conn:
        rows = conn.execute(select(customers).where(customers.c.namespace == namespace))
        return {r.id: (r.name, r.deleted_at is not None) for r in rows}


def test_customers_apply_applies_the_valid_records_and_reports_the_invalid(
    db: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "customers"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps({"namespace": "bulk", "id": "c_a", "name": "A"}))
    lines = [
        {"namespace": "bulk", "id": "c_b", "name": "B"},
        {"namespace": "bulk", "id": "bad id", "name": "X"},
        {"namespace": "bulk", "id": "c_c", "deleted_at": "2024-01-01T00:00:00Z"},
        {"namespace": "bulk", "id": "c_d", "colour": "red"},
    ]
    (folder / "b.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (folder / "ignored.txt").write_text("not read")

    result = invoke(cli_env, "customers", "apply", str(folder), "--format", "json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [(Path(r["source"]).name, r["result"]) for r in report["records"]] == [
        ("a.json", "created"),
        ("b.jsonl:1", "created"),
        ("b.jsonl:2", "failed"),
        ("b.jsonl:3", "created"),
        ("b.jsonl:4", "failed"),
    ]
    assert report["applied"] == 3 and report["failed"] == 2
    errors = {Path(r["source"]).name: r["errors"] for r in report["records"] if r["result"] == "failed"}
    assert any(e.startswith("id:") for e in errors["b.jsonl:2"]) and any("colour" in e for e in errors["b.jsonl:4"])
    assert "2 record(s) failed" in result.stderr and "b.jsonl:2" in result.stderr
    assert stored(db, "bulk") == {"c_a": ("A", False), "c_b": ("B", False), "c_c": ("c_c", True)}

    # JSON lines on stdin: only what a record gives changes; an explicit null deleted_at undeletes
    stdin = "\n".join(
        [
            json.dumps({"namespace": "bulk", "id": "c_a"}),
            json.dumps({"namespace": "bulk", "id": "c_c", "deleted_at": None}),
        ]
    )
    again = invoke(cli_env, "customers", "apply", "-", "--format", "json", input=stdin)
    assert again.exit_code == 0, again.output
    assert [r["result"] for r in json.loads(again.stdout)["records"]] == ["updated", "updated"]
    assert stored(db, "bulk")["c_a"] == ("A", False) and stored(db, "bulk")["c_c"] == ("c_c", False)

    table = invoke({**cli_env, "COLUMNS": "80"}, "customers", "apply", str(folder), "--format", "table")
    assert table.exit_code == 1 and "3 applied, 2 failed" in table.stdout


def test_one_invalid_record_is_bad_input_and_writes_nothing(db: Engine, cli_env: dict[str, str]) -> None:
    bad = invoke(cli_env, "customers", "apply", "-", input=json.dumps({"namespace": "one", "id": "c1", "name": 5}))
    assert bad.exit_code == 2 and "name" in bad.stderr
    assert stored(db, "one") == {}
    good = invoke(
        cli_env, "customers", "apply", "-", "--format", "json", input=json.dumps({"namespace": "one", "id": "c1"})
    )
    assert good.exit_code == 0 and json.loads(good.stdout)["id"] == "c1"
    assert invoke(cli_env, "customers", "apply", str(Path("/nonexistent/x.json"))).exit_code == 2
