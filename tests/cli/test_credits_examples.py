"""The worked examples E1-E9 of docs/credits.md §4, through the command line (typer's CliRunner) and the tables,
with their exact numbers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tests.builders import contract_example, flat, rate_card, unit
from worker.cli import app

runner = CliRunner()
NS = ("--namespace", "acme")
CUST = ("--customer", "cust_01")


class Cli:
    """The commands of docs/credits.md §2.3 and docs/contract.md §5 as one test drives them."""

    def __init__(self, env: dict[str, str], tmp_path: Path, db: Engine) -> None:
        self.env, self.tmp, self.db = env, tmp_path, db
        self.run("customers", "upsert", *NS, "--id", "cust_01")

    def run(self, *args: str) -> Any:
        result = runner.invoke(app, [*args, "--format", "json"], env=self.env)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def fail(self, code: int, *args: str) -> str:
        result = runner.invoke(app, [*args, "--format", "json"], env=self.env)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return str(result.stderr)

    def apply(self, doc: dict[str, Any]) -> None:
        path = self.tmp / "doc.json"
        path.write_text(json.dumps(doc))
        assert runner.invoke(app, ["subscriptions", "apply", str(path)], env=self.env).exit_code == 0

    def sync(self, at: str) -> list[dict[str, Any]]:
        return self.run("sync", *NS, "--subscription", "sub_01", "--as-of", at)["patches"]  # type: ignore[no-any-return]

    def advance(self, at: str) -> list[dict[str, Any]]:
        return self.run("charges", "advance", *NS, *CUST, "--as-of", at)["changes"]  # type: ignore[no-any-return]

    def invoice(self, at: str) -> list[str]:
        return [i["id"] for i in self.run("invoice", *NS, *CUST, "--as-of", at)["invoices"]]

    def grant(self, amount: str, gid: str, *extra: str) -> dict[str, Any]:
        return self.run(  # type: ignore[no-any-return]
            "credits", "grant", *NS, *CUST, "--currency", "USD", "--amount", amount, "--id", gid, *extra
        )

    def charges(self, *extra: str) -> dict[str, dict[str, Any]]:
        listed = self.run("charges", "list", *NS, *CUST, *extra)
        return {c["unique_reference_id"].removeprefix("sub_01/default/"): c for c in listed}

    def grants(self) -> dict[str, str]:
        return {g["id"]: g["remaining"] for g in self.run("credits", "grants", *NS, *CUST, "--include-voided")}

    def balance(self, *extra: str) -> dict[str, str]:
        (usd,) = self.run("credits", "balance", *NS, *CUST, *extra)
        return usd  # type: ignore[no-any-return]

    def lines(self) -> list[dict[str, Any]]:
        return self.run("lines", *NS, *CUST)  # type: ignore[no-any-return]

    def count(self, table: str) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def doc(mode: str, items: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    d = contract_example()
    d["settlement_mode"] = mode
    if items is not None:
        d["phases"][0]["items"] = items
    d.update(fields)
    return d


def version(active_from: str, card: dict[str, Any], active_to: str | None = None, vid: str = "it_01") -> dict[str, Any]:
    return {"id": vid, "active_from": active_from, "active_to": active_to, "annotations": {}, "rate_card": card}


def run_amounts(charge: dict[str, Any]) -> tuple[str, str, str, str]:
    (run,) = [r for r in charge["runs"] if not r["deleted"]]
    return run["amount"], run["discounts_total"], run["credits_total"], run["total"]


def rows(charge: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(a["kind"], a["grant_id"], a["amount"]) for r in charge["runs"] for a in r["allocations"]]


MONTHS = ["2024-01-01T00:01:00Z", "2024-02-01T00:01:00Z", "2024-03-01T00:01:00Z", "2024-04-01T00:01:00Z"]


def e1_months(cli: Cli, upto: int) -> None:
    cli.apply(doc("credit_only"))
    cli.grant("250", "cgr_G1", "--effective-at", "2024-01-01T00:00:00Z")
    for m in MONTHS[:upto]:
        cli.sync(m)
        cli.advance(m)


def test_e1_credit_only_four_months_then_a_backfill(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    cli.apply(doc("credit_only"))
    cli.grant("250", "cgr_G1", "--effective-at", "2024-01-01T00:00:00Z")
    dry = cli.run("sync", *NS, "--subscription", "sub_01", "--as-of", MONTHS[0], "--dry-run")["patches"]
    assert [(p["op"], p["charge_id"]) for p in dry] == [("charge_create", None)] * 2  # docs/credits.md §2.6
    assert cli.count("charges") == 0  # a dry run writes nothing
    expected = [("150", "0", "150"), ("50", "0", "50"), ("0", "50", "-50"), ("0", "150", "-150")]
    new_rows = [
        [("allocation", "cgr_G1", "100")],
        [("allocation", "cgr_G1", "100")],
        [("allocation", "cgr_G1", "50"), ("allocation", None, "50")],
        [("allocation", None, "100")],
    ]
    for n, month in enumerate(MONTHS):
        created = cli.sync(month)
        assert [p["op"] for p in created] == ["charge_create"] * (2 if n == 0 else 1)
        assert all(p["charge_id"] and p["line_id"] is None and p["invoice_id"] is None for p in created)
        changes = cli.advance(month)
        assert [(c["unique_reference_id"], c["status"]) for c in changes] == [
            (f"sub_01/default/platform-fee/v[0]/period[{n}]", "final")
        ] and changes[0]["run_id"]
        charges = cli.charges()
        booked = charges[f"platform-fee/v[0]/period[{n}]"]
        assert booked["status"] == "final" and booked["advance_after"] is None
        assert rows(booked) == new_rows[n] and run_amounts(booked) == ("100", "0", "100", "0")
        newest = charges[f"platform-fee/v[0]/period[{n + 1}]"]
        assert newest["status"] == "created" and newest["advance_after"] == newest["invoice_at"]
        remaining, advance, balance = expected[n]
        assert cli.grants() == {"cgr_G1": remaining}
        assert cli.balance() == {
            "currency": "USD",
            "available": remaining,
            "pending": "0",
            "expired": "0",
            "open_advance": advance,
            "balance": balance,
        }
        assert cli.advance(month) == []  # a second advance writes nothing
    assert cli.count("invoices") == 0 and cli.count("invoice_lines") == 0

    g2 = cli.grant("200", "cgr_G2", "--effective-at", "2024-04-01T12:00:00Z")
    assert g2["backfilled"] == "150" and g2["remaining"] == "50" and g2["status"] == "active"
    charges = cli.charges()
    for n, slice_ in ((2, "50"), (3, "100")):
        c = charges[f"platform-fee/v[0]/period[{n}]"]
        assert rows(c)[-2:] == [("backfill", None, f"-{slice_}"), ("backfill", "cgr_G2", slice_)]
        assert run_amounts(c)[2] == "100"  # credits_total unchanged
    assert cli.grants() == {"cgr_G1": "0", "cgr_G2": "50"}
    assert cli.balance()["open_advance"] == "0" and cli.balance()["balance"] == "50"


def test_e2_credit_only_cancelled_mid_period(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    e1_months(cli, 2)
    assert cli.grants() == {"cgr_G1": "50"}
    cli.apply(doc("credit_only", active_to="2024-02-16T00:00:00Z"))
    patches = cli.sync("2024-02-16T00:00:00Z")
    assert [(p["op"], p["unique_reference_id"].rsplit("/", 1)[1]) for p in patches] == [
        ("charge_delete", "period[2]"),
        ("charge_shrink", "period[1]"),
    ]
    charges = cli.charges("--include-deleted")
    assert charges["platform-fee/v[0]/period[2]"]["status"] == "deleted"
    assert charges["platform-fee/v[0]/period[2]"]["runs"] == []
    c1 = charges["platform-fee/v[0]/period[1]"]
    assert c1["status"] == "final" and c1["amount_after_proration"] == "51.72"
    assert c1["service_period"] == {"from": "2024-02-01T00:00:00Z", "to": "2024-02-16T00:00:00Z"}
    assert c1["full_service_period"] == {"from": "2024-02-01T00:00:00Z", "to": "2024-03-01T00:00:00Z"}
    assert c1["billing_period"] == {"from": "2024-02-01T00:00:00Z", "to": "2024-02-16T00:00:00Z"}
    assert c1["invoice_at"] == "2024-02-01T00:00:00Z"
    assert run_amounts(c1) == ("51.72", "0", "51.72", "0")
    assert rows(c1) == [("allocation", "cgr_G1", "100"), ("correction", "cgr_G1", "-48.28")]
    reversed_row = c1["runs"][0]["allocations"]
    assert reversed_row[1]["reverses_id"] == reversed_row[0]["id"]
    assert cli.grants() == {"cgr_G1": "98.28"} and cli.balance()["balance"] == "98.28"
    assert cli.sync("2024-02-16T00:00:00Z") == []


def e3_setup(cli: Cli) -> None:
    cli.apply(doc("credit_then_invoice"))
    cli.grant("250", "cgr_G1", "--effective-at", "2024-01-01T00:00:00Z")


def test_e3_credit_then_invoice_four_months(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    e3_setup(cli)
    expected = [("100", "0", "150"), ("100", "0", "50"), ("50", "50", "0"), ("0", "100", "0")]
    for n, month in enumerate(MONTHS):
        cli.sync(month)
        if n == 0:
            gathering = {line["unique_reference_id"]: line for line in cli.lines()}
            assert len(gathering) == 1 and None in gathering  # charge lines have no identity
            (l0, l1) = cli.lines()
            for line in (l0, l1):
                assert line["charge_id"] and line["unique_reference_id"] is None
                assert (line["amount"], line["discounts_total"], line["credits_total"], line["total"]) == (
                    "100",
                    "0",
                    None,
                    None,
                )
                assert line["price"] == {"type": "flat", "amount": "100", "payment_term": "in_advance"}
            assert cli.count("credit_allocations") == 0
        (draft,) = cli.invoice(month)
        charge = cli.charges()[f"platform-fee/v[0]/period[{n}]"]
        assert charge["status"] == "active"
        credits, total, remaining = expected[n]
        assert run_amounts(charge) == ("100", "0", credits, total)
        (line,) = [ln for ln in cli.lines() if ln["invoice_id"] == draft]
        assert (line["amount"], line["discounts_total"], line["credits_total"], line["total"]) == (
            "100",
            "0",
            credits,
            total,
        )
        assert len(rows(charge)) == (0 if credits == "0" else 1)
        assert cli.grants() == {"cgr_G1": remaining}
        cli.run("invoices", "set-status", *NS, "--id", draft, "--status", "issued")
        assert cli.charges()[f"platform-fee/v[0]/period[{n}]"]["status"] == "final"
    assert cli.balance()["open_advance"] == "0"


def e4_item() -> dict[str, Any]:
    card = rate_card("In advance", flat("6"))
    card["discounts"] = {"percentage": {"percentage": "50"}, "usage": None}
    return {"in-advance": [version("2024-01-01T00:00:00Z", card)]}


def test_e4_discount_then_credits(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    cli.apply(doc("credit_then_invoice", e4_item()))
    cli.grant("2", "cgr_G", "--effective-at", "2024-01-01T00:00:00Z")
    cli.sync("2024-01-01T00:01:00Z")
    (draft,) = cli.invoice("2024-01-01T00:01:00Z")
    by_invoice = {ln["invoice_type"]: ln for ln in cli.lines()}
    amounts = ("amount", "discounts_total", "credits_total", "total")
    assert tuple(by_invoice["standard"][k] for k in amounts) == ("6", "3", "2", "1")
    assert by_invoice["standard"]["invoice_id"] == draft
    assert tuple(by_invoice["gathering"][k] for k in amounts) == ("6", "3", None, None)
    assert cli.grants() == {"cgr_G": "0"}
    assert run_amounts(cli.charges()["in-advance/v[0]/period[0]"]) == ("6", "3", "2", "1")


def e5_setup(cli: Cli) -> str:
    cli.apply(doc("credit_then_invoice", {"in-advance": [version("2024-01-01T00:00:00Z", rate_card("In", flat("6")))]}))
    cli.grant("2", "cgr_G", "--effective-at", "2024-01-01T00:00:00Z")
    patches = cli.sync("2024-02-01T00:00:00Z")
    assert [p["op"] for p in patches] == ["charge_create", "charge_create"]
    assert cli.grants() == {"cgr_G": "2"}
    (d1,) = cli.invoice("2024-01-02T00:00:00Z")
    assert run_amounts(cli.charges()["in-advance/v[0]/period[0]"]) == ("6", "0", "2", "4")
    assert cli.grants() == {"cgr_G": "0"}
    return d1


def e5_change(cli: Cli) -> list[dict[str, Any]]:
    items = {
        "in-advance": [
            version("2024-01-01T00:00:00Z", rate_card("In", flat("6")), "2024-01-02T00:00:00Z"),
            version("2024-01-02T00:00:00Z", rate_card("In", flat("10")), vid="it_02"),
        ]
    }
    cli.apply(doc("credit_then_invoice", items))
    return cli.sync("2024-02-01T00:00:00Z")


def test_e5_issued_invoice_then_the_item_is_replaced(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    d1 = e5_setup(cli)
    cli.run("invoices", "set-status", *NS, "--id", d1, "--status", "paid")
    c0_before = cli.charges()["in-advance/v[0]/period[0]"]
    assert c0_before["status"] == "final"
    patches = e5_change(cli)
    assert [(p["op"], p["unique_reference_id"].removeprefix("sub_01/default/in-advance/")) for p in patches] == [
        ("charge_delete", "v[0]/period[1]"),
        ("charge_shrink", "v[0]/period[0]"),
        ("validation_issue", "v[0]/period[0]"),
        ("charge_create", "v[1]/period[0]"),
        ("charge_create", "v[1]/period[1]"),
    ]
    assert patches[2]["invoice_id"] == d1 and patches[2]["line_id"] == c0_before["runs"][0]["line_id"]
    charges = cli.charges()
    c0 = charges["in-advance/v[0]/period[0]"]
    assert c0["service_period"] == {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}
    assert (
        c0["full_service_period"]
        == c0["billing_period"]
        == {
            "from": "2024-01-01T00:00:00Z",
            "to": "2024-02-01T00:00:00Z",
        }
    )
    assert c0["amount_after_proration"] == "0.19" and c0["status"] == "final"
    assert run_amounts(c0) == ("6", "0", "2", "4") and cli.grants() == {"cgr_G": "0"}
    (issue,) = [
        i for inv in cli.run("invoices", "list", *NS, *CUST) if inv["id"] == d1 for i in inv["validation_issues"]
    ]
    assert issue["severity"] == "warning" and issue["code"] == "immutable_invoice_handling_not_supported"
    assert issue["component"] == "subscription-sync" and issue["path"] == f"lines/{c0['runs'][0]['line_id']}"
    assert issue["message"] == (
        "flat fee line's per unit amount cannot be changed on immutable invoice (new per unit amount: 0.19)"
    )
    c2, c3 = charges["in-advance/v[1]/period[0]"], charges["in-advance/v[1]/period[1]"]
    assert c2["service_period"] == {"from": "2024-01-02T00:00:00Z", "to": "2024-02-01T00:00:00Z"}
    assert c2["invoice_at"] == "2024-01-01T00:00:00Z" and c2["amount_after_proration"] == "9.68"
    assert c3["amount_after_proration"] == "10" and c3["invoice_at"] == "2024-02-01T00:00:00Z"
    gathering = sorted(ln["amount"] for ln in cli.lines() if ln["invoice_type"] == "gathering" and not ln["deleted"])
    assert gathering == ["10", "9.68"]
    assert charges.get("in-advance/v[0]/period[1]") is None  # deleted (and its line with it)
    issues = cli.count("invoice_validation_issues")
    assert cli.sync("2024-02-01T00:00:00Z") == [] and cli.count("invoice_validation_issues") == issues


def test_e6_draft_invoice_then_the_same_change(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    d1 = e5_setup(cli)
    patches = e5_change(cli)
    assert [p["op"] for p in patches] == ["charge_delete", "charge_shrink", "charge_create", "charge_create"]
    c0 = cli.charges()["in-advance/v[0]/period[0]"]
    assert c0["status"] == "active" and c0["amount_after_proration"] == "0.19"
    assert run_amounts(c0) == ("0.19", "0", "0.19", "0")
    assert rows(c0) == [("allocation", "cgr_G", "2"), ("correction", "cgr_G", "-1.81")]
    (l0,) = [ln for ln in cli.lines() if ln["invoice_id"] == d1]
    assert l0["service_period"] == {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}
    assert l0["price"]["amount"] == "0.19" and l0["invoice_at"] == "2024-01-01T00:00:00Z"
    assert (l0["amount"], l0["discounts_total"], l0["credits_total"], l0["total"]) == ("0.19", "0", "0.19", "0")
    assert cli.grants() == {"cgr_G": "1.81"}
    (d2,) = cli.invoice("2024-01-02T00:00:00Z")
    (l2,) = [ln for ln in cli.lines() if ln["invoice_id"] == d2]
    assert (l2["amount"], l2["discounts_total"], l2["credits_total"], l2["total"]) == ("9.68", "0", "1.81", "7.87")
    assert cli.grants() == {"cgr_G": "0"}


def api_item(cadence: str = "P1M", price: str = "0.10") -> dict[str, Any]:
    return {"api": [version("2024-01-01T00:00:00Z", rate_card("API", unit(price), cadence=cadence, feature_key="api"))]}


def test_e7_usage_credit_then_invoice(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    cli.apply(doc("credit_then_invoice", api_item()))
    cli.grant("120", "cgr_G", "--effective-at", "2024-01-01T00:00:00Z")
    cli.sync("2024-01-01T00:01:00Z")
    (u0,) = cli.charges().values()
    assert u0["status"] == "created" and u0["invoice_at"] == "2024-02-01T00:00:00Z"
    (lu0,) = cli.lines()
    assert lu0["price"] == {"type": "unit", "amount": "0.1"} and lu0["quantity"] is None and lu0["amount"] is None
    assert [c["status"] for c in cli.advance("2024-01-01T00:01:00Z")] == ["active"]
    u0 = cli.run("charges", "set-quantity", *NS, "--charge", u0["id"], "--quantity", "3000")
    assert u0["quantity"] == "3000" and u0["rated_amount"] == "300" and u0["status"] == "active"
    (lu0,) = cli.lines()
    assert (lu0["quantity"], lu0["amount"], lu0["discounts_total"]) == ("3000", "300", "0")
    (d1,) = cli.invoice("2024-02-01T00:01:00Z")
    (lu0,) = cli.lines()
    assert lu0["invoice_id"] == d1
    assert (lu0["amount"], lu0["discounts_total"], lu0["credits_total"], lu0["total"]) == ("300", "0", "120", "180")
    assert cli.balance() == {
        "currency": "USD",
        "available": "0",
        "pending": "0",
        "expired": "0",
        "open_advance": "0",
        "balance": "0",
    }


def test_e7_usage_credit_only(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    cli.apply(doc("credit_only", api_item()))
    cli.grant("120", "cgr_G", "--effective-at", "2024-01-01T00:00:00Z")
    cli.sync("2024-01-01T00:01:00Z")
    assert [c["status"] for c in cli.advance("2024-01-01T00:01:00Z")] == ["active"]
    (u0,) = cli.charges().values()
    u0 = cli.run("charges", "set-quantity", *NS, "--charge", u0["id"], "--quantity", "3000")
    assert u0["status"] == "final" and run_amounts(u0) == ("300", "0", "300", "0")
    assert rows(u0) == [("allocation", "cgr_G", "120"), ("allocation", None, "180")]
    # the same quantity again: no write; another one: exit 1
    assert cli.run("charges", "set-quantity", *NS, "--charge", u0["id"], "--quantity", "3000")["runs"] == u0["runs"]
    err = cli.fail(1, "charges", "set-quantity", *NS, "--charge", u0["id"], "--quantity", "1")
    assert f"error: charge {u0['id']}: quantity already set to 3000" in err
    assert cli.invoice("2024-02-01T00:01:00Z") == [] and cli.lines() == []
    assert cli.balance()["open_advance"] == "180" and cli.balance()["balance"] == "-180"


def test_e8_one_time_fee_cancelled(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    items = {
        "setup": [version("2024-01-01T00:00:00Z", rate_card("Setup", flat("5"), cadence=None))],
        "api": [
            version("2024-01-01T00:00:00Z", rate_card("API", unit("1"), cadence="P1Y", feature_key="api"), vid="it_02")
        ],
    }
    cli.apply(doc("credit_then_invoice", items, billing_cadence="P1Y"))
    s, c, year = "2024-01-01T00:00:00Z", "2024-01-01T05:00:00Z", "2025-01-01T00:00:00Z"
    assert [p["op"] for p in cli.sync("2024-01-01T00:01:00Z")] == ["charge_create", "charge_create"]
    charges = cli.charges()
    setup, api = charges["setup/v[0]"], charges["api/v[0]/period[0]"]
    assert setup["service_period"] == setup["full_service_period"] == {"from": s, "to": s}
    assert setup["billing_period"] == {"from": s, "to": year} and setup["amount_after_proration"] == "5"
    assert api["service_period"] == api["full_service_period"] == api["billing_period"] == {"from": s, "to": year}
    assert api["invoice_at"] == year
    ids = {k: v["id"] for k, v in charges.items()}

    cli.apply(doc("credit_then_invoice", items, billing_cadence="P1Y", active_to=c))
    patches = cli.sync(c)
    assert sorted((p["op"], p["unique_reference_id"].removeprefix("sub_01/default/")) for p in patches) == [
        ("charge_extend", "setup/v[0]"),
        ("charge_shrink", "api/v[0]/period[0]"),
    ]
    charges = cli.charges()
    setup, api = charges["setup/v[0]"], charges["api/v[0]/period[0]"]
    assert setup["service_period"] == setup["full_service_period"] == setup["billing_period"] == {"from": s, "to": c}
    assert setup["invoice_at"] == s and setup["amount_after_proration"] == "5"
    assert api["service_period"] == api["billing_period"] == {"from": s, "to": c}
    assert api["full_service_period"] == {"from": s, "to": year} and api["invoice_at"] == c
    assert {k: v["id"] for k, v in charges.items()} == ids
    by_charge = {ln["charge_id"]: ln for ln in cli.lines()}
    assert by_charge[setup["id"]]["service_period"] == {"from": s, "to": c}
    assert by_charge[setup["id"]]["invoice_at"] == s and by_charge[api["id"]]["invoice_at"] == c
    updated = {k: v["id"] for k, v in charges.items()}
    assert cli.sync(c) == [] and {k: v["id"] for k, v in cli.charges().items()} == updated


def test_e9_consumption_order_priority_restriction_expiry(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    items = {
        "platform-fee": [version("2024-01-01T00:00:00Z", rate_card("Platform fee", flat("12")))],
        **{k: [{**v[0], "id": "it_02"}] for k, v in api_item().items()},
    }
    cli.apply(doc("credit_only", items))
    eff = ("--effective-at", "2024-01-01T00:00:00Z")
    cli.grant("15", "GA", *eff)
    cli.grant("10", "GB", *eff, "--expires-at", "2024-02-01T00:00:00Z")
    cli.grant("25", "GC", *eff, "--feature", "api")
    cli.grant("5", "GD", *eff, "--priority", "0")
    order = ["GD", "GC", "GB", "GA"]  # consumption order: priority, restricted first, expiring first
    assert [g["id"] for g in cli.run("credits", "grants", *NS, *CUST)] == order

    def remaining() -> tuple[str, ...]:
        g = cli.grants()
        return g["GA"], g["GB"], g["GC"], g["GD"]

    cli.sync("2024-01-01T00:01:00Z")
    cli.advance("2024-01-01T00:01:00Z")
    assert rows(cli.charges()["platform-fee/v[0]/period[0]"]) == [("allocation", "GD", "5"), ("allocation", "GB", "7")]
    assert remaining() == ("15", "3", "25", "0")
    cli.sync("2024-02-01T00:01:00Z")
    cli.advance("2024-02-01T00:01:00Z")
    assert rows(cli.charges()["platform-fee/v[0]/period[1]"]) == [("allocation", "GA", "12")]
    assert remaining() == ("3", "3", "25", "0")
    api = cli.charges()["api/v[0]/period[0]"]
    api = cli.run("charges", "set-quantity", *NS, "--charge", api["id"], "--quantity", "300")
    assert rows(api) == [("allocation", "GC", "25"), ("allocation", "GA", "3"), ("allocation", None, "2")]
    assert remaining() == ("0", "3", "0", "0")
    assert cli.balance("--as-of", "2024-02-01T12:00:00Z") == {
        "currency": "USD",
        "available": "0",
        "pending": "0",
        "expired": "3",
        "open_advance": "2",
        "balance": "-2",
    }


def test_settlement_mode_is_printed_and_immutable(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    cli.apply(doc("credit_only"))
    assert cli.run("subscriptions", "get", *NS, "--id", "sub_01")["settlement_mode"] == "credit_only"
    path = tmp_path / "change.json"
    changed = doc("credit_only")
    del changed["settlement_mode"]
    path.write_text(json.dumps(changed))
    result = runner.invoke(app, ["subscriptions", "apply", str(path)], env=cli_env)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: settlement_mode: cannot change the settlement mode of subscription sub_01 "
        "(stored: credit_only, given: invoice_only)"
    ]
    bad = copy.deepcopy(changed) | {"settlement_mode": "credit_first"}
    path.write_text(json.dumps(bad))
    result = runner.invoke(app, ["subscriptions", "apply", str(path)], env=cli_env)
    assert result.exit_code == 2 and "settlement_mode" in result.stderr
    assert cli.run("subscriptions", "get", *NS, "--id", "sub_01")["settlement_mode"] == "credit_only"


# --- bad input (docs/credits.md §2.3 exit codes): a clear error, nothing written ------------------------------


def written(cli: Cli) -> tuple[int, ...]:
    return tuple(cli.count(t) for t in ("credit_grants", "credit_allocations", "charges", "charge_runs"))


def test_bad_grants_are_refused_and_write_nothing(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    cli.run("customers", "upsert", *NS, "--id", "gone", "--deleted-at", "2024-01-01T00:00:00Z")
    before = written(cli)
    grant = ("credits", "grant", *NS, "--currency", "USD")
    cases: list[tuple[int, tuple[str, ...], str]] = [
        (2, (*CUST, "--amount", "0"), "--amount: must be greater than 0"),
        (2, (*CUST, "--amount", "-5"), "--amount: must be greater than 0"),
        (2, (*CUST, "--amount", "1.001"), "--amount: USD allows at most 2 decimal places"),
        (2, (*CUST, "--amount", "ten"), "--amount"),
        (2, (*CUST, "--amount", "1", "--priority", "-1"), "--priority"),
        (2, (*CUST, "--amount", "1", "--feature", " "), "--feature"),
        (
            2,
            (*CUST, "--amount", "1", "--effective-at", "2024-02-01T00:00:00Z", "--expires-at", "2024-01-01T00:00:00Z"),
            "--expires-at",
        ),
        (1, ("--customer", "nobody", "--amount", "1"), "customer 'nobody' not found"),
        (1, ("--customer", "gone", "--amount", "1"), "customer 'gone' is deleted"),
    ]
    for code, args, message in cases:
        err = cli.fail(code, *grant, *args)
        assert message in err, (args, err)
    assert "not an ISO 4217" in cli.fail(2, "credits", "grant", *NS, *CUST, "--currency", "XXZ", "--amount", "1")
    assert written(cli) == before
    cli.grant("5", "cgr_X")
    assert cli.grant("5", "cgr_X")["remaining"] == "5"  # the same --id and fields: no write
    assert "exists with other fields" in cli.fail(1, *grant, *CUST, "--amount", "6", "--id", "cgr_X")
    assert cli.count("credit_grants") == before[0] + 1


def test_set_quantity_refusals(cli_env: dict[str, str], tmp_path: Path, db: Engine) -> None:
    cli = Cli(cli_env, tmp_path, db)
    items = {
        **doc("credit_only")["phases"][0]["items"],
        **{k: [{**v[0], "id": "it_02"}] for k, v in api_item().items()},
    }
    cli.apply(doc("credit_only", items))
    cli.sync("2024-01-01T00:01:00Z")
    charges = cli.charges()
    fee, api = charges["platform-fee/v[0]/period[0]"]["id"], charges["api/v[0]/period[0]"]["id"]
    before = written(cli)
    sq = ("charges", "set-quantity", *NS, "--charge")
    assert f"charge {fee}: is a flat fee charge" in cli.fail(1, *sq, fee, "--quantity", "3")
    assert "--quantity" in cli.fail(2, *sq, api, "--quantity", "-1")
    assert "--quantity" in cli.fail(2, *sq, api, "--quantity", "lots")
    assert "not found" in cli.fail(1, *sq, "chg_missing", "--quantity", "1")
    assert written(cli) == before
    assert "not found" in cli.fail(1, "charges", "advance", *NS, "--customer", "nobody")
    assert "not found" in cli.fail(1, "credits", "balance", *NS, "--customer", "nobody")
    assert "exactly one of" in cli.fail(2, "charges", "list", *NS)
