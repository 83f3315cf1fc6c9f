"""Every statement the sync, invoicing and advance paths execute is confined to one namespace (issue 25): tenant
isolation, and the distribution key a partitioned or distributed Postgres would need (docs/scaling.md §5).

The statements are not named here: they are captured while the real paths run on Postgres (`bench.capture`), then
each is planned with its own parameters (EXPLAIN VERBOSE, nothing executed again). Every scan of a project table
must carry a `namespace` condition (its own, or the join's above it); every insert must carry the `namespace`
column. So a reshaped sync is checked as it is, and a new statement that forgets the tenant fails here.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, update

from bench.capture import PROJECT_TABLES, Captured, capture, distinct, explain_json, namespace_problems, plan_nodes
from tests.builders import flat, item, phase, seed_subscription, set_subscription_end, t, unique, unit
from worker.app.charges import advance_customer
from worker.app.credits import GrantRequest, grant_credit
from worker.app.invoicing import invoice_pending_lines
from worker.app.sync import sync_subscription
from worker.store.tables import subscriptions


def _seed(db: Engine, namespace: str, sub_id: str, customer_id: str, mode: str) -> None:
    start = "2024-01-01"
    seed_subscription(
        db,
        phase("default", start, item("fee", flat("10"), start), item("calls", unit("0.5"), start)),
        namespace=namespace,
        id=sub_id,
        customer_id=customer_id,
        start=start,
    )
    with db.begin() as conn:
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.namespace == namespace, subscriptions.c.id == sub_id)
            .values(settlement_mode=mode)
        )


def _run_paths(db: Engine, namespace: str) -> None:
    """Syncs (first, steady, after an edit), invoicing and advancing of three customers, one per settlement mode."""
    as_of, later = t("2024-04-15"), t("2024-06-01")
    for n in range(3):
        sub_id, customer_id = f"sub_{n}", f"cust_{n}"
        sync_subscription(db, namespace, sub_id, as_of=as_of)
        sync_subscription(db, namespace, sub_id, as_of=as_of)
        set_subscription_end(db, "2024-04-10", namespace=namespace, id=sub_id)
        sync_subscription(db, namespace, sub_id, as_of=as_of)
        invoice_pending_lines(db, namespace, customer_id, as_of=later)
        advance_customer(db, namespace, customer_id, as_of=later)


def test_sync_invoicing_and_advance_filter_every_statement_by_namespace(db: Engine) -> None:
    namespace, other = unique("tenant"), unique("other")
    for ns in (namespace, other):  # a second tenant with the same ids: what a missing filter would touch
        for n, mode in enumerate(("invoice_only", "credit_then_invoice", "credit_only")):
            _seed(db, ns, f"sub_{n}", f"cust_{n}", mode)
            if mode != "invoice_only":
                grant_credit(db, ns, GrantRequest(f"cust_{n}", "USD", Decimal("15"), effective_at=t("2024-01-01")))

    with capture(db) as captured:
        _run_paths(db, namespace)

    problems: list[str] = []
    written: set[str] = set()
    checked = 0
    for statement in distinct(captured):
        if not statement.tables():
            continue  # the customer lock, settings: no table
        plan = explain_json(db, statement, verbose=True)
        checked += 1
        written |= {
            node["Relation Name"]
            for node in plan_nodes(plan)
            if node["Node Type"] == "ModifyTable" and node.get("Relation Name") in PROJECT_TABLES
        }
        problems += [f"{p}:\n    {statement.statement.strip()[:300]}" for p in namespace_problems(statement, plan)]
    assert not problems, "\n".join(problems)
    # the paths really ran: reads and every kind of write were checked
    assert checked >= 15
    assert {"invoice_lines", "invoices", "charges", "charge_runs", "credit_allocations"} <= written
    assert "subscription_sync_states" in written


def test_the_check_finds_a_statement_without_namespace(db: Engine) -> None:
    """The check itself can fail: a read by another key alone, a join on the id alone, an insert without the
    column are each reported (planned only, never run)."""
    namespace = unique("tenant")
    bad = [
        Captured("SELECT id FROM invoice_lines WHERE subscription_id = %(s)s", {"s": "sub_0"}),
        Captured(
            "SELECT l.id FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id WHERE l.namespace = %(n)s",
            {"n": namespace},
        ),
        Captured("INSERT INTO customers (id, name) VALUES ('x', 'x')", {}),
    ]
    found = [namespace_problems(c, explain_json(db, c, verbose=True)) for c in bad]
    assert found[0] and all("invoice_lines without a namespace condition" in p for p in found[0])
    assert any("on invoices without a namespace condition" in p for p in found[1])
    assert found[2] == ["insert into customers without namespace"]
    good = Captured("SELECT id FROM invoice_lines WHERE namespace = %(n)s AND subscription_id = 's'", {"n": namespace})
    assert namespace_problems(good, explain_json(db, good, verbose=True)) == []
