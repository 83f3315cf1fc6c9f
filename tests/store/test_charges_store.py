"""Charges, grants and allocation rows against real Postgres (docs/credits.md §2.2, §3.3, §3.8-§3.10): the engine's
changes written and read back, statements constant in the number of charges, append-only rows in ledger
order, balances, the schema's checks, and namespace scoping."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from tests.builders import seed_customer
from tests.domain.builders import flat, item, phase, sub, t
from worker.domain.charges import ChargeEngine, CreditMode, build_charge_targets, plan_charges
from worker.domain.credit_allocation import Grant
from worker.domain.timeutil import Period
from worker.domain.view import SubscriptionView
from worker.infra.ids import new_id
from worker.store.apply import get_or_create_gathering_invoice
from worker.store.charges import (
    SUBSCRIPTION_CHARGES_SELECT,
    load_charges,
    load_due_charges,
    load_subscription_charges,
    write_charge_changes,
)
from worker.store.credits import (
    balances,
    get_grant,
    insert_allocation_rows,
    insert_grant,
    list_grants,
    load_ledger,
    void_grant,
)
from worker.store.tables import charge_runs, charges, credit_allocations, credit_grants, invoice_lines, invoices

D = Decimal
NS = "acme"


def view(n_items: int = 1, end: str | None = None) -> SubscriptionView:
    items = [item(f"fee{i}" if i else "platform-fee", flat("100"), "2024-01-01") for i in range(n_items)]
    return sub(phase("default", "2024-01-01", *items), end=end)


def grant(gid: str, amount: str, effective: str = "2024-01-01", created: str | None = None) -> Grant:
    return Grant(gid, "USD", D(amount), t(effective), t(created or effective))


@pytest.fixture
def customer(db: Engine) -> Engine:
    with db.begin() as conn:
        seed_customer(conn)
        seed_customer(conn, namespace="other")
    return db


def sync(conn: Connection, v: SubscriptionView, as_of: str, mode: CreditMode, namespace: str = NS) -> None:
    """What phase B's sync does for a charge-backed subscription (docs/credits.md §3.7 steps 2-4)."""
    now = t(as_of)
    items = load_subscription_charges(conn, namespace, "sub_01")
    patches = plan_charges(build_charge_targets(v, now, mode), items)
    touched = [i.charge.id for p in patches if (i := getattr(p, "item", None)) is not None and i.run is not None]
    runs = [i.run.id for i in items.values() if i.run is not None and i.charge.id in touched]
    ledger, _ = load_ledger(conn, namespace, "cust_01", "USD", run_ids=runs, new_id=lambda: new_id("cal"))
    gathering = (
        get_or_create_gathering_invoice(conn, namespace, "cust_01", "USD", now) if mode != "credit_only" else None
    )
    engine = ChargeEngine(
        customer_id="cust_01", now=now, new_id=new_id, ledgers={"USD": ledger}, gathering_invoice_id=gathering
    )
    engine.apply_plan(patches)
    write_charge_changes(conn, namespace, "cust_01", engine.changes, [ledger], now)


def advance(conn: Connection, now: str) -> None:
    due = load_due_charges(conn, NS, "cust_01", t(now))
    ledger, _ = load_ledger(conn, NS, "cust_01", "USD", new_id=lambda: new_id("cal"))
    engine = ChargeEngine(customer_id="cust_01", now=t(now), new_id=new_id, ledgers={"USD": ledger})
    for it in due:
        engine.advance(it)
    write_charge_changes(conn, NS, "cust_01", engine.changes, [ledger], t(now))


def remaining(conn: Connection) -> dict[str, Decimal]:
    return {g.grant.id: g.remaining for g in list_grants(conn, NS, "cust_01", include_voided=True)}


@contextmanager
def counting(db: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(db, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(db, "before_cursor_execute", capture)


def test_e1_credit_only_through_the_tables_then_a_backfill(customer: Engine) -> None:
    with customer.begin() as conn:
        insert_grant(conn, NS, "cust_01", grant("G1", "250"))
    for month in range(1, 5):
        with customer.begin() as conn:
            sync(conn, view(), f"2024-0{month}-01T00:01", "credit_only")
            advance(conn, f"2024-0{month}-01T00:01")
    with customer.connect() as conn:
        assert remaining(conn) == {"G1": 0}
        (usd,) = balances(conn, NS, "cust_01", t("2024-04-01T00:01"))
        assert (usd.available, usd.open_advance, usd.balance) == (0, D(150), D(-150))
        rows = conn.execute(select(charges).where(charges.c.namespace == NS).order_by(charges.c.service_period_start))
        statuses = [(r.unique_reference_id.removeprefix("sub_01/default/"), r.status, r.advance_after) for r in rows]
        assert statuses[:4] == [(f"platform-fee/v[0]/period[{n}]", "final", None) for n in range(4)]
        assert statuses[4] == ("platform-fee/v[0]/period[4]", "created", t("2024-05-01"))
        assert conn.execute(select(invoice_lines)).first() is None
        assert conn.execute(select(invoices)).first() is None  # no invoice, line or gathering invoice

    # G2 = 200 effective 04-01T12:00, created later: pays open advance, oldest first (docs/credits.md §3.8 backfill).
    with customer.begin() as conn:
        g2 = grant("G2", "200", effective="2024-04-01T12:00", created="2024-04-02")
        insert_grant(conn, NS, "cust_01", g2)
        ledger, keys = load_ledger(conn, NS, "cust_01", "USD", with_open_advance=True, new_id=lambda: new_id("cal"))
        assert ledger.backfill(g2, t("2024-04-02"), keys) == D(150)
        insert_allocation_rows(conn, NS, "cust_01", "USD", ledger.new_rows, t("2024-04-02"))
    with customer.connect() as conn:
        assert remaining(conn) == {"G1": 0, "G2": D(50)}
        (usd,) = balances(conn, NS, "cust_01", t("2024-04-02"))
        assert (usd.open_advance, usd.balance) == (0, D(50))
        rows = conn.execute(select(credit_allocations).order_by(credit_allocations.c.seq)).all()
        assert [(r.grant_id, r.kind, r.amount) for r in rows[-4:]] == [
            (None, "backfill", D(-50)),
            ("G2", "backfill", D(50)),
            (None, "backfill", D(-100)),
            ("G2", "backfill", D(100)),
        ]
        assert [r.seq for r in rows] == sorted(r.seq for r in rows)
        assert [r.id for r in rows[-4:]] == [r.id for r in ledger.new_rows]  # seq follows the ledger's order


def test_e2_shrink_and_delete_written_and_read_back(customer: Engine) -> None:
    with customer.begin() as conn:
        insert_grant(conn, NS, "cust_01", grant("G1", "250"))
    for month in (1, 2):
        with customer.begin() as conn:
            sync(conn, view(), f"2024-0{month}-01T00:01", "credit_only")
            advance(conn, f"2024-0{month}-01T00:01")
    with customer.begin() as conn:
        sync(conn, view(end="2024-02-16"), "2024-02-16", "credit_only")
    with customer.connect() as conn:
        items = load_subscription_charges(conn, NS, "sub_01")
        assert sorted(i.removeprefix("sub_01/default/") for i in items) == [
            "platform-fee/v[0]/period[0]",
            "platform-fee/v[0]/period[1]",
        ]
        c1 = items["sub_01/default/platform-fee/v[0]/period[1]"]
        assert c1.charge.service_period == Period(t("2024-02-01"), t("2024-02-16"))
        assert (c1.charge.amount_after_proration, c1.charge.amount_before_proration) == (D("51.72"), D(100))
        assert c1.run is not None and (c1.run.amount, c1.run.credits_total) == (D("51.72"), D("51.72"))
        assert remaining(conn) == {"G1": D("98.28")}
        deleted = conn.execute(select(charges).where(charges.c.status == "deleted")).one()
        assert deleted.deleted_at == t("2024-02-16") and deleted.advance_after is None
    with customer.begin() as conn, counting(customer) as statements:
        sync(conn, view(end="2024-02-16"), "2024-02-16", "credit_only")
    assert not any(s.lstrip().upper().startswith(("INSERT", "UPDATE")) for s in statements)  # nothing written


def test_credit_then_invoice_lines_runs_and_invoicing(customer: Engine) -> None:
    with customer.begin() as conn:
        insert_grant(conn, NS, "cust_01", grant("G", "150"))
        sync(conn, view(), "2024-01-01T00:01", "credit_then_invoice")
    with customer.connect() as conn:
        lines = conn.execute(select(invoice_lines).order_by(invoice_lines.c.service_period_start)).all()
        assert [(ln.managed_by, ln.unique_reference_id, ln.amount, ln.credits_total) for ln in lines] == [
            ("system", None, D(100), None),
            ("system", None, D(100), None),
        ]
        assert lines[0].price == {"type": "flat", "amount": "100", "payment_term": "in_advance"}
    # docs/sync.md §9 step 4 moves the due line onto a new draft; then docs/credits.md §3.11 step 2.
    with customer.begin() as conn:
        now = t("2024-01-01T00:01")
        conn.execute(
            insert(invoices).values(
                namespace=NS, id="D1", customer_id="cust_01", currency="USD", type="standard", status="draft"
            )
        )
        item_ = load_subscription_charges(conn, NS, "sub_01")["sub_01/default/platform-fee/v[0]/period[0]"]
        assert item_.line is not None and item_.line_invoice is not None and item_.line_invoice.is_gathering
        conn.execute(update(invoice_lines).where(invoice_lines.c.id == item_.line.id).values(invoice_id="D1"))
        item_ = load_charges(conn, NS, [item_.charge.id])[item_.charge.id]
        ledger, _ = load_ledger(conn, NS, "cust_01", "USD", new_id=lambda: new_id("cal"))
        engine = ChargeEngine(customer_id="cust_01", now=now, new_id=new_id, ledgers={"USD": ledger})
        engine.invoice(item_, "D1")
        write_charge_changes(conn, NS, "cust_01", engine.changes, [ledger], now)
    with customer.connect() as conn:
        item_ = load_subscription_charges(conn, NS, "sub_01")["sub_01/default/platform-fee/v[0]/period[0]"]
        assert item_.charge.status == "active" and item_.run is not None and item_.line is not None
        assert item_.run_invoice is not None and item_.run_invoice.id == "D1" and not item_.run_invoice.immutable
        assert (item_.run.amount, item_.run.credits_total, item_.run.total) == (D(100), D(100), D(0))
        assert (item_.line.invoice_id, item_.line.credits_total, item_.line.total) == ("D1", D(100), D(0))
        assert remaining(conn) == {"G": D(50)}


def test_loading_and_writing_take_constant_statements_in_the_number_of_charges(customer: Engine) -> None:
    counts = []
    for n_items, namespace in ((1, NS), (25, "other")):
        with customer.begin() as conn, counting(customer) as written:
            sync(conn, view(n_items), "2024-01-01T00:01", "credit_then_invoice", namespace=namespace)
        with customer.connect() as conn, counting(customer) as loaded:
            items = load_subscription_charges(conn, namespace, "sub_01")
        assert len(items) == 2 * n_items
        counts.append((len(written), len(loaded)))
    assert counts[0] == counts[1]
    assert counts[0][1] == 1


def test_every_query_is_scoped_by_namespace(customer: Engine) -> None:
    with customer.begin() as conn:
        sync(conn, view(), "2024-01-01T00:01", "credit_only", namespace="other")
        insert_grant(conn, "other", "cust_01", grant("G", "10"))
    with customer.connect() as conn:
        assert load_subscription_charges(conn, NS, "sub_01") == {}
        assert load_due_charges(conn, NS, "cust_01", t("2030-01-01")) == []
        assert list_grants(conn, NS, "cust_01") == []
        assert balances(conn, NS, "cust_01", t("2024-01-01")) == []
        assert get_grant(conn, NS, "G") is None
        assert len(load_subscription_charges(conn, "other", "sub_01")) == 2


def test_grants_void_and_list(customer: Engine) -> None:
    with customer.begin() as conn:
        insert_grant(conn, NS, "cust_01", Grant("GB", "USD", D(5), t("2024-01-01"), t("2024-01-01"), priority=0))
        insert_grant(
            conn,
            NS,
            "cust_01",
            Grant("GA", "USD", D("7.5"), t("2024-01-01"), t("2024-01-01"), feature_keys=frozenset({"api", "b"})),
        )
        insert_grant(conn, NS, "cust_01", Grant("GE", "EUR", D(3), t("2024-01-01"), t("2024-01-01")))
        assert void_grant(conn, NS, "GB", t("2024-01-05"))
        assert not void_grant(conn, NS, "GB", t("2024-01-06"))  # already voided: no write
        assert not void_grant(conn, NS, "missing", t("2024-01-06"))
    with customer.connect() as conn:
        assert [g.grant.id for g in list_grants(conn, NS, "cust_01")] == ["GE", "GA"]
        listed = list_grants(conn, NS, "cust_01", include_voided=True)
        assert [g.grant.id for g in listed] == ["GE", "GB", "GA"]
        assert listed[2].grant.feature_keys == frozenset({"api", "b"}) and listed[2].remaining == D("7.5")
        assert listed[1].grant.voided_at == t("2024-01-05")
        stored = conn.execute(select(credit_grants.c.feature_keys).where(credit_grants.c.id == "GB")).scalar_one()
        assert stored is None  # SQL NULL, not JSON null
        assert [(b.currency, b.available) for b in balances(conn, NS, "cust_01", t("2024-02-01"))] == [
            ("EUR", D(3)),
            ("USD", D("7.5")),
        ]


_ids = itertools.count()


def _charge_values(**changes: object) -> dict[str, object]:
    at = t("2024-01-01")
    values: dict[str, object] = dict(
        namespace=NS, id=f"chg_{next(_ids)}", customer_id="cust_01", subscription_id="sub_01",
        subscription_phase_id="ph", subscription_item_id="it", unique_reference_id=f"u{next(_ids)}", type="flat_fee",
        settlement_mode="credit_only", status="created", currency="USD", name="n",
        price={"type": "flat", "amount": "1"}, pro_rating_enabled=True, pro_rating_mode="prorate_prices",
        service_period_start=at, service_period_end=at, full_service_period_start=at, full_service_period_end=at,
        billing_period_start=at, billing_period_end=at, invoice_at=at, amount_after_proration=1,
    )  # fmt: skip
    values.update(changes)
    return values


@pytest.mark.parametrize(
    ("table", "values"),
    [
        ("charges", {"status": "deleted"}),  # deleted without deleted_at
        ("charges", {"deleted_at": t("2024-01-02")}),  # deleted_at on a live status
        ("charges", {"type": "usage_based", "feature_key": None, "amount_after_proration": None}),
        ("charges", {"amount_after_proration": None}),
        ("charges", {"settlement_mode": "invoice_only"}),
        ("grants", {"amount": 0}),
        ("grants", {"feature_keys": []}),
        ("grants", {"expires_at": t("2024-01-01")}),
        ("grants", {"priority": -1}),
        ("allocations", {"kind": "correction", "amount": 5}),
        ("allocations", {"kind": "allocation", "amount": 5, "reverses_id": "x"}),
        ("allocations", {"kind": "backfill", "amount": 5, "grant_id": None, "backfills_id": "x"}),
        ("allocations", {"kind": "allocation", "amount": 0}),
    ],
)
def test_schema_checks_refuse_impossible_rows(customer: Engine, table: str, values: dict[str, object]) -> None:
    with customer.begin() as conn:
        conn.execute(insert(charges).values(**_charge_values(id="chg_ok", unique_reference_id="ok")))
        insert_grant(conn, NS, "cust_01", grant("G", "10"))
        conn.execute(
            insert(charge_runs).values(
                namespace=NS,
                id="crun_ok",
                charge_id="chg_ok",
                customer_id="cust_01",
                currency="USD",
                service_period_start=t("2024-01-01"),
                service_period_end=t("2024-01-01"),
                amount=1,
                discounts_total=0,
                credits_total=0,
                total=0,
                booked_at=t("2024-01-01"),
            )
        )
    statement = {
        "charges": insert(charges).values(**_charge_values(**values)),
        "grants": insert(credit_grants).values(
            **{
                "namespace": NS,
                "id": "G2",
                "customer_id": "cust_01",
                "currency": "USD",
                "amount": 1,
                "effective_at": t("2024-01-01"),
                **values,
            }
        ),
        "allocations": insert(credit_allocations).values(
            **{
                "namespace": NS,
                "id": "cal_x",
                "customer_id": "cust_01",
                "currency": "USD",
                "charge_id": "chg_ok",
                "run_id": "crun_ok",
                "grant_id": "G",
                "booked_at": t("2024-01-01"),
                **values,
            }
        ),
    }[table]
    with pytest.raises(IntegrityError), customer.begin() as conn:
        conn.execute(statement)


def test_allocation_rows_are_numbered_in_insertion_order(customer: Engine) -> None:
    with customer.begin() as conn:
        insert_grant(conn, NS, "cust_01", grant("G", "1000"))
        sync(conn, view(3), "2024-01-01T00:01", "credit_only")
        advance(conn, "2024-01-01T00:01")
    with customer.connect() as conn:
        seqs = conn.execute(
            text("SELECT seq FROM credit_allocations WHERE namespace = :ns ORDER BY created_at, id"), {"ns": NS}
        )
        assert len(seqs.all()) == 3
        booked = conn.execute(
            select(charge_runs.c.charge_id, credit_allocations.c.seq)
            .join(credit_allocations, credit_allocations.c.run_id == charge_runs.c.id)
            .order_by(credit_allocations.c.seq)
        ).all()
        ids = [r.charge_id for r in booked]
        order = conn.execute(
            select(charges.c.id).where(charges.c.status == "final").order_by(charges.c.unique_reference_id)
        ).scalars()
        assert ids == list(order)  # advance order (advance_after, identity, id) is the seq order
        assert remaining(conn) == {"G": D(700)}


OTHER_INVOICES = 200


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *[n for child in plan.get("Plans", []) for n in _nodes(child)]]


def test_charge_read_probes_invoices_by_id_whatever_the_namespace_holds(customer: Engine) -> None:
    """docs/performance.md "Charge read plans": each charge's run, line and their invoices are index probes, never a
    scan of the namespace's invoices per charge (which the plain outer joins got with no live run anywhere)."""
    with customer.begin() as conn:
        sync(conn, view(12), "2024-03-15", "credit_only")  # unbooked charges: no live run anywhere
        for n in range(OTHER_INVOICES):
            seed_customer(conn, NS, f"cust_other_{n}")
        conn.execute(
            insert(invoices),
            [
                {
                    "namespace": NS,
                    "id": f"inv_other_{n}",
                    "customer_id": f"cust_other_{n}",
                    "currency": "USD",
                    "type": "gathering",
                    "status": "gathering",
                }
                for n in range(OTHER_INVOICES)
            ],
        )
        charges = load_subscription_charges(conn, NS, "sub_01")
        assert len(charges) >= 12
        sql = str(SUBSCRIPTION_CHARGES_SELECT.compile(conn, compile_kwargs={"render_postcompile": True}))
        explained = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, {"namespace": NS, "subscription_id": "sub_01"}
        ).scalar_one()
    plan = (explained if isinstance(explained, list) else json.loads(explained))[0]["Plan"]
    nodes = _nodes(plan)
    filtered = sum(n.get("Rows Removed by Join Filter", 0) + n.get("Rows Removed by Filter", 0) for n in nodes)
    invoice_rows = sum(n["Actual Rows"] * n["Actual Loops"] for n in nodes if n.get("Relation Name") == "invoices")
    # The old joins filtered out every other invoice once per charge: 12 x 200 rows and more.
    assert filtered < OTHER_INVOICES, filtered
    assert invoice_rows <= 2 * len(charges), invoice_rows
