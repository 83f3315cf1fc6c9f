"""`subsync demo` end to end in-process (on the test database and a private Redis key namespace)."""

from __future__ import annotations

import json
from decimal import Decimal

from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.builders import comparable
from worker.cli import app
from worker.cli.demo import (
    DEMO_CREDIT_SUBSCRIPTION,
    DEMO_CUSTOMER,
    DEMO_GRANT,
    DEMO_GRANT_AMOUNT,
    DEMO_NAMESPACE,
    DEMO_SUPPORT_FEE,
)

runner = CliRunner()


def test_demo_prints_the_lines_and_is_idempotent(db: Engine, cli_env: dict[str, str], broker_namespace: str) -> None:
    env = {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace}
    first = runner.invoke(app, ["demo", "--format", "json"], env=env)
    assert first.exit_code == 0, first.stderr
    lines = json.loads(first.stdout)  # docs/contract.md §5: the demo prints the invoice lines
    refs = [line["unique_reference_id"] for line in lines]
    assert any("/launch/platform-fee/" in r for r in refs) and any("/growth/api-calls/" in r for r in refs)
    assert {line["invoice_type"] for line in lines} == {"standard", "gathering"}  # due lines were invoiced
    assert not any(line["subscription"]["subscription_id"] == DEMO_CREDIT_SUBSCRIPTION for line in lines)
    second = runner.invoke(app, ["demo", "--format", "json"], env=env)
    assert second.exit_code == 0, second.stderr
    again = json.loads(second.stdout)
    assert comparable(again) == comparable(lines)
    assert [line["id"] for line in again] == [line["id"] for line in lines]
    table = runner.invoke(app, ["demo", "--format", "table"], env=env)
    # the table names the subscription once (in its title) and each line by the rest of its identity
    assert table.exit_code == 0 and "demo-subscription/" in table.stdout
    assert "growth/platform-fee/v[0]/period[0]" in table.stdout
    assert DEMO_CREDIT_SUBSCRIPTION in table.stdout and "Credit balance" in table.stdout


def test_demo_shows_the_credit_subscription_and_its_balance(
    db: Engine, cli_env: dict[str, str], broker_namespace: str
) -> None:
    """docs/credits.md §1: the credit_only subscription has charges and no lines; the worker booked the due ones
    against the demo's grant, so the balance is the grant minus what they took (docs/credits.md §3.9)."""
    env = {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace}
    result = runner.invoke(app, ["demo", "--format", "json"], env=env)
    assert result.exit_code == 0, result.stderr

    def cli_json(*args: str) -> object:
        out = runner.invoke(app, [*args, "--namespace", DEMO_NAMESPACE, "--format", "json"], env=env)
        assert out.exit_code == 0, out.stderr
        return json.loads(out.stdout)

    charges: list[dict[str, object]] = cli_json("charges", "list", "--subscription", DEMO_CREDIT_SUBSCRIPTION)  # type: ignore[assignment]
    balances: list[dict[str, str]] = cli_json("credits", "balance", "--customer", DEMO_CUSTOMER)  # type: ignore[assignment]
    assert charges and {c["settlement_mode"] for c in charges} == {"credit_only"}
    assert {c["subscription"]["subscription_id"] for c in charges} == {DEMO_CREDIT_SUBSCRIPTION}
    assert all(c["line_id"] is None for c in charges)  # credit_only: no invoice line, ever
    booked = [c for c in charges if c["status"] == "final"]
    # the subscription started two months ago: this month's and the two earlier periods are booked
    assert len(booked) == 3 and all(c["amount_after_proration"] == DEMO_SUPPORT_FEE for c in booked)
    runs = [run for c in charges for run in c["runs"] if not run["deleted"]]
    assert len(runs) == len(booked)
    allocations = [a for run in runs for a in run["allocations"]]
    from_grant = sum(Decimal(a["amount"]) for a in allocations if a["grant_id"] == DEMO_GRANT)
    advance = sum(Decimal(a["amount"]) for a in allocations if a["grant_id"] is None)
    taken = sum(Decimal(run["credits_total"]) for run in runs)
    assert taken == from_grant + advance == 3 * Decimal(DEMO_SUPPORT_FEE)
    (balance,) = balances
    grant = Decimal(DEMO_GRANT_AMOUNT)
    assert balance["currency"] == "USD"
    assert Decimal(balance["available"]) == grant - from_grant
    assert Decimal(balance["open_advance"]) == advance
    assert Decimal(balance["balance"]) == grant - taken == Decimal(balance["available"]) - advance
