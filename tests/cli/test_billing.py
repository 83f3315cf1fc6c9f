"""`subsync sync`, `lines`, `invoice`, `invoices set-status|list` through the CLI (docs/contract.md §5, §6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.builders import contract_example
from worker.cli import app

runner = CliRunner()


def run(env: dict[str, str], *args: str) -> Any:
    result = runner.invoke(app, list(args), env=env)
    return result


def ok_json(env: dict[str, str], *args: str) -> Any:
    result = run(env, *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def setup(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "customers", "upsert", "--namespace", "acme", "--id", "cust_01").exit_code == 0
    doc = contract_example()
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    assert run(env, "subscriptions", "apply", str(path)).exit_code == 0


SYNC = ("sync", "--namespace", "acme", "--subscription", "sub_01", "--as-of", "2024-01-15T00:00:00Z")


def test_sync_prints_the_contract_shape_and_converges(db: Engine, cli_env: dict[str, str], tmp_path: Path) -> None:
    setup(cli_env, tmp_path)
    dry = ok_json(cli_env, *SYNC, "--dry-run")
    assert dry["dry_run"] is True and [p["op"] for p in dry["patches"]] == ["line_create", "line_create"]
    assert dry["patches"][0]["invoice_id"] is None and dry["patches"][0]["line_id"]
    assert ok_json(cli_env, "lines", "--namespace", "acme", "--subscription", "sub_01") == []

    first = ok_json(cli_env, *SYNC)
    assert set(first) == {
        "namespace",
        "subscription_id",
        "as_of",
        "dry_run",
        "patches",
        "has_billables",
        "next_sync_after",
    }
    assert first["as_of"] == "2024-01-15T00:00:00Z" and first["next_sync_after"] == "2024-02-01T00:00:00Z"
    patch = first["patches"][0]
    assert set(patch) >= {"op", "unique_reference_id", "line_id", "invoice_id", "service_period"}
    assert patch == {
        "op": "line_create",
        "unique_reference_id": "sub_01/default/platform-fee/v[0]/period[0]",
        "line_id": patch["line_id"],
        "invoice_id": patch["invoice_id"],
        "service_period": {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"},
        "reason": "create",
    }
    assert ok_json(cli_env, *SYNC)["patches"] == []

    lines = ok_json(cli_env, "lines", "--namespace", "acme", "--customer", "cust_01")
    assert [line["unique_reference_id"] for line in lines] == [
        "sub_01/default/platform-fee/v[0]/period[0]",
        "sub_01/default/platform-fee/v[0]/period[1]",
    ]
    first_line = lines[0]
    assert first_line == {
        "id": first_line["id"],
        "invoice_id": patch["invoice_id"],
        "invoice_type": "gathering",
        "invoice_status": "gathering",
        "invoice_immutable": False,
        "managed_by": "subscription",
        "unique_reference_id": "sub_01/default/platform-fee/v[0]/period[0]",
        "split_line_group": None,
        "subscription": {
            "subscription_id": "sub_01",
            "phase_id": "ph_01",
            "item_id": "it_01",
            "billing_period": {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"},
        },
        "service_period": {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"},
        "invoice_at": "2024-01-01T00:00:00Z",
        "currency": "USD",
        "name": "Platform fee",
        "feature_key": None,
        "price": {"type": "flat", "amount": "100", "payment_term": "in_advance"},
        "discounts": {"percentage": None, "usage": None},
        "tax_config": None,
        "annotations": {},
        "quantity": None,
        "deleted": False,
        "charge_id": None,
        "amount": None,
        "discounts_total": None,
        "credits_total": None,
        "total": None,
    }


def test_invoice_then_issue_then_list_with_validation_issue(
    db: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    setup(cli_env, tmp_path)
    ok_json(cli_env, *SYNC)
    nothing = ok_json(
        cli_env, "invoice", "--namespace", "acme", "--customer", "cust_01", "--as-of", "2023-12-01T00:00:00Z"
    )
    assert nothing == {"invoices": []}
    created = ok_json(
        cli_env, "invoice", "--namespace", "acme", "--customer", "cust_01", "--as-of", "2024-01-15T00:00:00Z"
    )
    (inv,) = created["invoices"]
    assert inv["status"] == "draft" and inv["currency"] == "USD" and len(inv["line_ids"]) == 1
    issued = ok_json(cli_env, "invoices", "set-status", "--namespace", "acme", "--id", inv["id"], "--status", "issued")
    assert issued["immutable"] is True and issued["status"] == "issued"
    # the price changes: the issued line cannot follow, the sync records an issue instead
    doc = contract_example()
    doc["phases"][0]["items"]["platform-fee"][0]["rate_card"]["price"]["amount"] = "120"
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    assert run(cli_env, "subscriptions", "apply", str(tmp_path / "doc.json")).exit_code == 0
    result = ok_json(cli_env, *SYNC)
    assert [p["op"] for p in result["patches"]] == ["validation_issue", "line_update"]
    listed = ok_json(cli_env, "invoices", "list", "--namespace", "acme", "--customer", "cust_01")
    issued_entry = next(e for e in listed if e["id"] == inv["id"])
    assert issued_entry["validation_issues"] == [
        {
            "severity": "warning",
            "code": "immutable_invoice_handling_not_supported",
            "component": "subscription-sync",
            "message": "flat fee line's per unit amount cannot be changed on immutable invoice (new per unit amount: 120)",
            "path": f"lines/{inv['line_ids'][0]}",
        }
    ]
    assert ok_json(cli_env, *SYNC)["patches"] == []  # de-duplicated


def test_bad_input_exits_2_with_one_line(db: Engine, cli_env: dict[str, str]) -> None:
    result = run(cli_env, "lines", "--namespace", "acme")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "--customer" in errors[0]
    result = run(cli_env, "invoices", "set-status", "--namespace", "acme", "--id", "x", "--status", "lost")
    assert result.exit_code == 2 and "'draft', 'issued', 'paid'" in result.stderr
    result = run(cli_env, *SYNC[:-1], "yesterday")
    assert result.exit_code == 2


def test_unknown_subscription_exits_1(db: Engine, cli_env: dict[str, str]) -> None:
    result = run(cli_env, "sync", "--namespace", "acme", "--subscription", "nope")
    assert result.exit_code == 1 and "not found" in result.stderr and "Traceback" not in result.stderr
