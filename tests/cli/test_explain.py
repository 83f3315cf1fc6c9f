"""`subsync explain line|charge` (docs/sync.md §10.1): every line and charge of the demo and of the
fixtures is explained; the period and amount stated equal the stored ones, and "not targeted" is said exactly when
they differ."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, update
from typer.testing import CliRunner

from tests.app import test_spec_examples_db as spec
from tests.builders import (
    apply,
    contract_example,
    flat,
    item,
    move_lines_to_new_invoice,
    phase,
    seed_subscription,
    set_subscription_end,
    t,
    two_phase_document,
    unique,
    usage,
)
from worker.app.charges import advance_customer
from worker.app.explain import explain_line_of
from worker.app.invoicing import invoice_pending_lines
from worker.app.sync import sync_subscription
from worker.cli import app
from worker.cli.demo import DEMO_CUSTOMER, DEMO_NAMESPACE
from worker.store.lines import list_lines
from worker.store.tables import invoice_lines, subscriptions

runner = CliRunner()


def cli_json(env: dict[str, str], *args: str) -> Any:
    out = runner.invoke(app, [*args, "--format", "json"], env=env)
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def check(explained: dict[str, Any]) -> None:
    """The documented shape, and: targeted ⇔ the stored period and amount are the target's."""
    d = explained["derivation"]
    assert d is not None, explained
    assert {"key", "id", "position"} <= d["phase"].keys()
    assert {"key", "id", "version"} <= d["item"].keys()
    assert d["period"]["rule"] in ("recurring", "one_time")
    assert "applies" in d["proration"] and d["proration"]["reason"]
    stored = explained["stored"]
    target = explained["target"]
    same = (
        target is not None
        and stored["service_period"] == target["service_period"]
        and stored["amount"] == target["amount"]
    )
    if explained["kind"] == "line" and explained["split_group"] is not None:
        same = target is not None and explained["split_group"]["service_period"] == target["service_period"]
    assert explained["targeted"] == same == (explained["status"] == "targeted"), explained
    if same:
        # what the derivation states is what is stored (a split child: its group's whole period)
        group = explained.get("split_group")
        assert d["period"]["service_period"] == (group["service_period"] if group else stored["service_period"])
        assert d["proration"].get("amount") == stored["amount"]
        assert explained["differences"] == []


def explain_all(env: dict[str, str], namespace: str, customer: str) -> list[dict[str, Any]]:
    out = []
    for line in cli_json(env, "lines", "--namespace", namespace, "--customer", customer):
        out.append(cli_json(env, "explain", "line", "--namespace", namespace, "--id", line["id"]))
    for charge in cli_json(env, "charges", "list", "--namespace", namespace, "--customer", customer):
        out.append(cli_json(env, "explain", "charge", "--namespace", namespace, "--id", charge["id"]))
    return out


def test_explains_every_line_and_charge_of_the_demo(db: Engine, cli_env: dict[str, str], broker_namespace: str) -> None:
    env = {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace}
    assert runner.invoke(app, ["demo", "--format", "json"], env=env).exit_code == 0
    explained = explain_all(env, DEMO_NAMESPACE, DEMO_CUSTOMER)
    assert {e["kind"] for e in explained} == {"line", "charge"}
    for e in explained:
        check(e)
        assert e["targeted"], e  # the demo's worker synced them all: nothing differs
    table = runner.invoke(
        app,
        ["explain", "line", "--namespace", DEMO_NAMESPACE, "--id", explained[0]["id"], "--format", "table"],
        env={**env, "COLUMNS": "80"},
    )
    assert table.exit_code == 0 and "targeted" in table.stdout and "proration" in table.stdout
    assert max(len(row) for row in table.stdout.splitlines()) <= 80
    charge = next(e for e in explained if e["kind"] == "charge" and e["stored_row"]["runs"])
    table = runner.invoke(
        app,
        ["explain", "charge", "--namespace", DEMO_NAMESPACE, "--id", charge["id"], "--format", "table"],
        env={**env, "COLUMNS": "80"},
    )
    assert table.exit_code == 0 and "runs and allocation rows" in table.stdout and "state final" in table.stdout
    assert max(len(row) for row in table.stdout.splitlines()) <= 80


def test_explains_the_fixtures_and_says_not_targeted_when_they_differ(db: Engine, cli_env: dict[str, str]) -> None:
    ns = unique("explain")
    doc = {**contract_example(), "namespace": ns}
    doc["active_from"] = doc["billing_anchor"] = doc["phases"][0]["active_from"] = "2024-01-01T00:00:00Z"
    doc["phases"][0]["items"]["platform-fee"][0]["active_from"] = "2024-01-15T00:00:00Z"  # prorated first period
    doc["phases"][0]["items"]["api"] = [usage("it_api", "0.1", "2024-01-01T00:00:00Z")]
    apply(db, doc)
    growth = {**two_phase_document(), "namespace": ns, "id": "sub_two", "customer_id": doc["customer_id"]}
    apply(db, growth)
    seed_subscription(  # credit_only: charges
        db,
        phase("default", "2024-01-31", item("support", flat("25"), "2024-02-10")),
        namespace=ns,
        id="sub_credit",
        customer_id=doc["customer_id"],
        start="2024-01-31",
        end="2024-06-20",
    )
    with db.begin() as conn:
        conn.execute(
            update(subscriptions).where(subscriptions.c.id == "sub_credit").values(settlement_mode="credit_only")
        )
    for sub in ("sub_01", "sub_two", "sub_credit"):
        sync_subscription(db, ns, sub, as_of=t("2024-04-20"))
    advance_customer(db, ns, doc["customer_id"], as_of=t("2024-04-20"))
    env = cli_env
    explained = explain_all(env, ns, doc["customer_id"])
    assert len([e for e in explained if e["kind"] == "charge"]) >= 3
    clamps = {c["kind"] for e in explained for c in e["derivation"]["period"]["clamps"]}
    assert {"version_start", "month_end"} <= clamps  # mid-period start; an anchor on the 31st
    assert any(e["derivation"]["proration"]["applies"] for e in explained)
    for e in explained:
        check(e)
        assert e["targeted"], e

    # a line edited by hand: not targeted, with the difference and what sync does
    first = next(e for e in explained if e["kind"] == "line" and e["stored"]["amount"] is not None)
    with db.begin() as conn:
        conn.execute(
            update(invoice_lines)
            .where(invoice_lines.c.id == first["id"])
            .values(price={"type": "flat", "amount": "1", "payment_term": "in_advance"}, managed_by="manual")
        )
    edited = cli_json(env, "explain", "line", "--namespace", ns, "--id", first["id"])
    check(edited)
    assert edited["status"] == "not targeted" and edited["differences"][0]["field"] == "amount"
    assert "by hand" in edited["sync"]

    # the subscription cancelled before the line's period: the document no longer produces it
    set_subscription_end(db, "2024-01-10", namespace=ns, id="sub_01")
    later = [e for e in explained if e["kind"] == "line" and e["unique_reference_id"].startswith("sub_01/")]
    for e in later:
        again = cli_json(env, "explain", "line", "--namespace", ns, "--id", e["id"])
        assert again["status"] == "not targeted", again
        assert again["reason"]


def test_explains_split_children_immutable_lines_and_credit_then_invoice(db: Engine, cli_env: dict[str, str]) -> None:
    """A progressive split (docs/sync.md §9), an issued invoice (§6.4) and credit_then_invoice charges."""
    ns = unique("explain-more")
    seed_subscription(
        db,
        phase(
            "default",
            "2024-01-01",
            item("api", {"type": "unit", "amount": "0.1"}, "2024-01-01"),
            item("fee", flat("40"), "2024-01-01"),
        ),
        namespace=ns,
        id="sub_x",
    )
    seed_subscription(
        db, phase("default", "2024-01-01", item("seat", flat("12"), "2024-01-01")), namespace=ns, id="sub_c"
    )
    with db.begin() as conn:
        conn.execute(
            update(subscriptions).where(subscriptions.c.id == "sub_c").values(settlement_mode="credit_then_invoice")
        )
    for sub in ("sub_x", "sub_c"):
        sync_subscription(db, ns, sub, as_of=t("2024-02-10"))
    invoice_pending_lines(db, ns, "cust_01", as_of=t("2024-01-15"), progressive=True)  # splits the usage line
    fee = next(
        line
        for line in cli_json(cli_env, "lines", "--namespace", ns, "--subscription", "sub_x")
        if "/fee/" in (line["unique_reference_id"] or "") and line["invoice_type"] == "gathering"
    )
    move_lines_to_new_invoice(db, [fee["id"]], "issued", namespace=ns)
    explained = explain_all(cli_env, ns, "cust_01")
    children = [e for e in explained if e["kind"] == "line" and e["split_group"] is not None]
    assert len(children) == 2 and all(c["split_group"]["siblings"] for c in children)
    assert any(e["kind"] == "charge" and e["stored"]["settlement_mode"] == "credit_then_invoice" for e in explained)
    for e in explained:
        check(e)
        assert e["targeted"], e

    # the fee doubles: the issued line is not targeted any more, and sync can only record an issue
    seed_subscription(
        db,
        phase(
            "default",
            "2024-01-01",
            item("api", {"type": "unit", "amount": "0.1"}, "2024-01-01"),
            item("fee", flat("80"), "2024-01-01"),
        ),
        namespace=ns,
        id="sub_x",
    )
    issued = cli_json(cli_env, "explain", "line", "--namespace", ns, "--id", fee["id"])
    check(issued)
    assert issued["status"] == "not targeted" and issued["invoice"]["immutable"]
    assert issued["target"]["amount"] == "80" and "validation issue" in issued["sync"]
    assert issued["invoice"]["issues"] == []
    sync_subscription(db, ns, "sub_x", as_of=t("2024-02-10"))  # what sync did instead: an issue (docs/sync.md §6.4)
    after = cli_json(cli_env, "explain", "line", "--namespace", ns, "--id", fee["id"])
    assert after["status"] == "not targeted"
    assert [i["severity"] for i in after["invoice"]["issues"]] == ["warning"]
    assert "80" in after["invoice"]["issues"][0]["message"]


@pytest.mark.parametrize(
    "example",
    [
        spec.test_12_2_anchor_on_the_31st,
        spec.test_12_3_inserted_phase_shrinks_and_creates,
        spec.test_12_6_one_time_items,
        spec.test_12_7_price_change_mid_period,
        spec.test_12_8_force_continuous_lines,
        spec.test_three_phases_five_items_two_years,
    ],
)
def test_explains_every_line_of_the_worked_examples(db: Engine, example: Callable[[Engine], None]) -> None:
    """docs/sync.md §12 as the DB tests build them: every line explained, targeted ⇔ stored as targeted."""
    example(db)
    with db.connect() as conn:
        rows = list_lines(conn, "acme", customer_id="cust_01")
    assert rows
    for row in rows:
        check(explain_line_of(db, "acme", row.id).data)
