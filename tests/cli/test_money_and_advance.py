"""Issue 21 items 1 and 3 through the command line: credit money is exact at 38 digits (docs/contract.md §3
"arithmetic"), and one advance equals advancing at every earlier due time (docs/credits.md §3.10)."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.builders import flat, rate_card
from tests.cli.test_credits_examples import CUST, NS, Cli, doc, version
from worker.cli import app

runner = CliRunner()


def cents(text: str) -> int:
    """A printed amount in cents, read exactly (no decimal context)."""
    value = Fraction(text) * 100
    assert value.denominator == 1, text
    return int(value)


def test_credit_only_money_is_exact_at_38_digits(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    fee = "9" * 36 + ".99"  # 38 digits
    percentage = "33.333333333333333333333333333333333333"  # 38 digits
    grant = "12345678901234567890123456789012345.67"  # 37 digits: covers the first month, not the second
    cli = Cli(cli_env, tmp_path, db)
    card = rate_card("Platform fee", flat(fee))
    card["discounts"] = {"percentage": {"percentage": percentage}, "usage": None}
    cli.apply(doc("credit_only", {"platform-fee": [version("2024-01-01T00:00:00Z", card)]}))
    cli.grant(grant, "cgr_G", "--effective-at", "2024-01-01T00:00:00Z")
    for at in ("2024-01-01T00:01:00Z", "2024-02-01T00:01:00Z"):
        cli.sync(at)
        cli.advance(at)

    a = cents(fee)
    d = math.floor(Fraction(a) * Fraction(percentage) / 100 + Fraction(1, 2))  # round half up, in cents
    net = a - d
    booked = [c for c in cli.charges().values() if c["status"] == "final"]
    assert len(booked) == 2  # January and February; March is not due yet
    allocated = advance = 0
    for charge in booked:
        (run,) = [r for r in charge["runs"] if not r["deleted"]]
        assert (cents(run["amount"]), cents(run["discounts_total"])) == (a, d)
        assert cents(run["credits_total"]) == net == sum(cents(x["amount"]) for x in run["allocations"])
        allocated += sum(cents(x["amount"]) for x in run["allocations"] if x["grant_id"] is not None)
        advance += sum(cents(x["amount"]) for x in run["allocations"] if x["grant_id"] is None)
    assert allocated == cents(grant)  # the grant is used up exactly, never beyond its amount
    assert allocated + advance == net * len(booked)  # credit + advance = net, to the cent
    balance = cli.balance()
    assert (cents(balance["available"]), cents(balance["open_advance"])) == (0, advance)
    assert cents(balance["balance"]) == -advance
    assert cli.grants() == {"cgr_G": "0"}


def charges_of(env: dict[str, str], customer: str) -> dict[str, list[tuple[Any, ...]]]:
    result = runner.invoke(app, ["charges", "list", *NS, "--customer", customer, "--format", "json"], env=env)
    assert result.exit_code == 0, result.stderr
    out = {}
    for charge in json.loads(result.stdout):
        identity = charge["unique_reference_id"].split("/", 1)[1]  # without the subscription id
        rows = [
            (r["booked_at"], a["kind"], a["grant_id"] and "grant", Decimal(a["amount"]))  # each customer's own
            for r in charge["runs"]
            for a in r["allocations"]
        ]
        out[identity] = [charge["status"], *rows]
    return out


def test_one_advance_equals_advancing_at_every_due_time(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    """A P2W in-advance fee under P1M billing (its periods' invoice_at is the billing start) and a one-time fee
    booked on Jan 10: caught up at once on Feb 1, the one-time fee still takes credit before the fee's
    Jan 15 period, as it does when every due time is advanced in turn."""
    cli = Cli(cli_env, tmp_path, db)
    items = {
        "biweekly": [version("2024-01-01T00:00:00Z", rate_card("Biweekly", flat("10"), cadence="P2W"))],
        "setup": [version("2024-01-10T00:00:00Z", rate_card("Setup", flat("10"), cadence=None), vid="it_02")],
    }
    for customer, sub in (("cust_01", "sub_01"), ("cust_02", "sub_02")):
        cli.run("customers", "upsert", *NS, "--id", customer)
        document = doc("credit_only", items, id=sub, customer_id=customer)
        document["phases"][0]["id"] = f"ph_{sub}"
        for key, versions in document["phases"][0]["items"].items():
            versions[0]["id"] = f"{sub}_{key}"
        cli.apply(document)
        grant = ("credits", "grant", *NS, "--customer", customer, "--currency", "USD", "--amount", "25")
        cli.run(*grant, "--id", f"cgr_{customer}", "--effective-at", "2024-01-01T00:00:00Z")
        cli.run("sync", *NS, "--subscription", sub, "--as-of", "2024-02-01T00:00:00Z")
    stepwise = ["2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", "2024-01-15T00:00:00Z", "2024-01-29T00:00:00Z"]
    for at in [*stepwise, "2024-02-01T00:00:00Z"]:
        cli.run("charges", "advance", *NS, *CUST, "--as-of", at)
    cli.run("charges", "advance", *NS, "--customer", "cust_02", "--as-of", "2024-02-01T00:00:00Z")

    one_step = charges_of(cli_env, "cust_02")
    assert one_step == charges_of(cli_env, "cust_01")
    # Served by booking time: Jan 1 period, the Jan 10 setup fee, then the Jan 15 period (credit runs out).
    assert one_step["default/setup/v[0]"][1:] == [("2024-01-10T00:00:00Z", "allocation", "grant", Decimal(10))]
    assert [row[1:] for row in one_step["default/biweekly/v[0]/period[1]"][1:]] == [
        ("allocation", "grant", Decimal(5)),
        ("allocation", None, Decimal(5)),
    ]
