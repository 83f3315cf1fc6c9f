"""Charges (docs/credits.md §3.1-§3.13) at domain level: routing, amounts and rating, targets, the diff, and the
engine, driven through the worked examples E1-E9 of docs/credits.md §4 with their exact numbers.

`World` keeps in memory what the store keeps in tables and applies the engine's `ChargeChanges` the way
the store must (docs/credits.md §3.7 apply order), so the examples read like their tables."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.domain.builders import flat, item, phase, sub, t, unit
from tests.domain.strategies import subscriptions
from worker.domain.charges import (
    Charge,
    ChargeChanges,
    ChargeCreate,
    ChargeEngine,
    ChargeError,
    ChargeItem,
    ChargeLine,
    ChargeRun,
    CreditMode,
    RoutingError,
    build_charge_targets,
    discount_total,
    flat_charge_amount,
    index_charges,
    is_invoiceable,
    plan_charges,
    rate_usage,
    route,
)
from worker.domain.credit_allocation import AllocationRow, Grant, Ledger
from worker.domain.errors import PlanningError
from worker.domain.money import round_cur
from worker.domain.persisted import HierarchyItem, Invoice, LineItem, PersistedGroup, PersistedLine
from worker.domain.prices import UsagePrice
from worker.domain.timeutil import Period
from worker.domain.updater import NewIssue
from worker.domain.view import SubscriptionView

D = Decimal
GATHERING = Invoice("inv_g", "gathering", "gathering", False, False)
IMMUTABLE = {"issued", "paid", "voided"}


def g(gid: str, amount: str, effective: str = "2024-01-01", **kw: object) -> Grant:
    return Grant(gid, "USD", D(amount), t(effective), kw.pop("created", t(effective)), **kw)  # type: ignore[arg-type]


class World:
    """The rows of one customer, in memory."""

    def __init__(self, mode: CreditMode, *grants: Grant) -> None:
        self.mode = mode
        self.charges: dict[str, Charge] = {}
        self.runs: dict[str, ChargeRun] = {}
        self.lines: dict[str, ChargeLine] = {}
        self.invoices: dict[str, Invoice] = {GATHERING.id: GATHERING}
        self.grants: list[Grant] = list(grants)
        self.rows: list[AllocationRow] = []
        self.issues: list[NewIssue] = []
        self._ids = itertools.count(1)
        self._drafts = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    # -- reading ---------------------------------------------------------------------------------
    def items(self) -> dict[str, ChargeItem]:
        out = []
        for c in self.charges.values():
            run = next((r for r in self.runs.values() if r.charge_id == c.id and r.deleted_at is None), None)
            line = next((ln for ln in self.lines.values() if ln.charge_id == c.id), None)
            out.append(
                ChargeItem(
                    c,
                    run,
                    self.invoices[run.invoice_id] if run and run.invoice_id else None,
                    line,
                    self.invoices[line.invoice_id] if line and line.invoice_id else None,
                )
            )
        return index_charges(out)

    def item(self, short: str) -> ChargeItem:
        return self.items()[f"sub_01/default/{short}"]

    def charge(self, short: str) -> Charge:
        found = [c for c in self.charges.values() if c.identity == f"sub_01/default/{short}"]
        return found[-1]

    def ledger(self) -> Ledger:
        return Ledger("USD", self.grants, self.rows, new_id=lambda: self.new_id("cal"))

    def remaining(self, gid: str) -> Decimal:
        grant = next(x for x in self.grants if x.id == gid)
        return grant.amount - sum((r.amount for r in self.rows if r.grant_id == gid), D(0))

    def open_advance(self) -> Decimal:
        return sum((r.amount for r in self.rows if r.grant_id is None), D(0))

    def run_rows(self, run_id: str) -> list[tuple[str | None, str, Decimal]]:
        return [(r.grant_id, r.kind, r.amount) for r in self.rows if r.run_id == run_id]

    # -- writing ---------------------------------------------------------------------------------
    def engine(self, now: datetime) -> tuple[ChargeEngine, Ledger]:
        ledger = self.ledger()
        engine = ChargeEngine(
            customer_id="cust_01",
            now=now,
            new_id=self.new_id,
            ledgers={"USD": ledger},
            gathering_invoice_id=GATHERING.id,
            existing_issues=[i.key for i in self.issues],
        )
        return engine, ledger

    def commit(self, changes: ChargeChanges, ledger: Ledger) -> ChargeChanges:
        for c in [*changes.new_charges.values(), *changes.charge_writes.values()]:
            self.charges[c.id] = c
        for r in [*changes.new_runs.values(), *changes.run_writes.values()]:
            self.runs[r.id] = r
        for line_id in changes.line_deletes:
            self.lines.pop(line_id, None)
        for new in changes.new_lines.values():
            self.lines[new.line.id] = new.line
        for line in changes.line_writes.values():
            self.lines[line.id] = line
        self.rows += ledger.new_rows
        self.issues += changes.issues
        return changes

    def sync(self, view: SubscriptionView, as_of: str) -> ChargeChanges:
        engine, ledger = self.engine(t(as_of))
        targets = build_charge_targets(view, t(as_of), self.mode)
        engine.apply_plan(plan_charges(targets, self.items()))
        return self.commit(engine.changes, ledger)

    def advance(self, now: str) -> ChargeChanges:
        engine, ledger = self.engine(t(now))
        due = [i for i in self.items().values() if i.charge.advance_after and i.charge.advance_after <= t(now)]
        for it in sorted(due, key=lambda i: (i.charge.advance_after, i.identity, i.charge.id)):
            engine.advance(it)
        return self.commit(engine.changes, ledger)

    def set_quantity(self, short: str, quantity: str, now: str) -> Charge:
        engine, ledger = self.engine(t(now))
        charge = engine.set_quantity(self.item(short), D(quantity))
        self.commit(engine.changes, ledger)
        return charge

    def invoice(self, as_of: str) -> str | None:
        """docs/sync.md §9 with docs/credits.md §3.11: move invoiceable charge lines onto a new draft, then create the runs."""
        due = [
            i
            for i in self.items().values()
            if i.line and i.line.invoice_id == GATHERING.id and is_invoiceable(i.charge, i.line, t(as_of))
        ]
        if not due:
            return None
        draft = f"D{next(self._drafts)}"
        self.invoices[draft] = Invoice(draft, "standard", "draft", False, False)
        engine, ledger = self.engine(t(as_of))
        assert all(i.line is not None for i in due)
        order = sorted(due, key=lambda i: (i.charge.invoice_at, i.charge.service_period.start, i.identity, i.line.id))  # type: ignore[union-attr]
        for it in order:
            engine.invoice(it, draft)
        self.commit(engine.changes, ledger)
        return draft

    def set_status(self, invoice_id: str, status: str) -> None:
        old = self.invoices[invoice_id]
        self.invoices[invoice_id] = Invoice(old.id, old.type, status, status in IMMUTABLE, False)
        engine, ledger = self.engine(t("2024-01-01"))
        for it in self.items().values():
            if it.run is not None and it.run.invoice_id == invoice_id:
                engine.invoice_status_changed(it, status in IMMUTABLE)
        self.commit(engine.changes, ledger)


def ops(changes: ChargeChanges) -> list[tuple[str, str]]:
    return [(p.op, p.unique_reference_id.removeprefix("sub_01/default/")) for p in changes.patches]


def platform_fee(end: str | None = None, amount: str = "100") -> SubscriptionView:
    return sub(
        phase("default", "2024-01-01", item("platform-fee", flat(amount), "2024-01-01", name="Platform fee")), end=end
    )


# --- routing (docs/credits.md §3.1) -----------------------------------------------------------------------


def _line(identity: str) -> PersistedLine:
    period = Period(t("2024-01-01"), t("2024-02-01"))
    return PersistedLine("il_1", "inv_g", "subscription", identity, None, {}, period, period, period.start, None, False)


def test_routing_persisted_items_keep_their_backend_and_new_ones_follow_the_mode() -> None:
    ident = "sub_01/default/fee/v[0]/period[0]"
    line = LineItem(_line(ident))
    assert route(ident, "credit_only", line, None) == "line"
    assert route(ident, "invoice_only", None, "chg_1") == "charge"
    assert route(ident, "invoice_only", None, None) == "line"
    assert route(ident, "credit_then_invoice", None, None) == "charge"
    assert route(ident, "credit_only", None, None) == "charge"
    with pytest.raises(RoutingError, match=r"fee/v\[0\]/period\[0\]: held by both charge chg_1 and invoice line il_1"):
        route(ident, "credit_only", line, "chg_1")
    group = HierarchyItem(PersistedGroup("slg_1", ident, Period(t("2024-01-01"), t("2024-02-01")), ()))
    with pytest.raises(RoutingError, match="held by both charge chg_1 and split line group slg_1"):
        route(ident, "credit_only", group, "chg_1")


# --- amounts (docs/credits.md §3.5) -----------------------------------------------------------------------


def test_flat_amount_prorates_only_a_partial_service_period_and_always_rounds() -> None:
    def amount(value: str, service: tuple[str, str], full: tuple[str, str], enabled: bool = True) -> Decimal:
        return flat_charge_amount(
            D(value),
            Period(t(service[0]), t(service[1])),
            Period(t(full[0]), t(full[1])),
            enabled,
            "prorate_prices",
            "USD",
        )

    assert amount("100", ("2024-02-01", "2024-02-16"), ("2024-02-01", "2024-03-01")) == D("51.72")  # E2
    assert amount("6", ("2024-01-01", "2024-01-02"), ("2024-01-01", "2024-02-01")) == D("0.19")  # E5
    assert amount("10", ("2024-01-02", "2024-02-01"), ("2024-01-01", "2024-02-01")) == D("9.68")  # E5
    assert amount("5", ("2024-01-01", "2024-01-01"), ("2024-01-01", "2024-01-01")) == D(5)  # E8: s = 0
    assert amount("5", ("2024-01-01", "2024-01-01T05:00"), ("2024-01-01", "2024-01-01T05:00")) == D(5)  # s = f
    assert amount("100.005", ("2024-01-01", "2024-02-01"), ("2024-01-01", "2024-02-01")) == D("100.01")
    assert amount("100", ("2024-02-01", "2024-02-16"), ("2024-02-01", "2024-03-01"), enabled=False) == D(100)


def test_rating_of_every_price_type() -> None:
    def rate(price: dict, q: str, usage: str | None = None, currency: str = "USD") -> Decimal:
        discounts = {"percentage": None, "usage": {"quantity": usage} if usage else None}
        return rate_usage(price, D(q), discounts, currency)

    assert rate({"type": "unit", "amount": "0.10"}, "3000") == D(300)  # E7
    assert rate({"type": "unit", "amount": "0.10"}, "300") == D(30)  # E9
    assert rate({"type": "unit", "amount": "0.333"}, "1") == D("0.33")  # each component rounded
    assert rate({"type": "unit", "amount": "1"}, "10", usage="4") == D(6)
    assert rate({"type": "unit", "amount": "1"}, "3", usage="4") == D(0)
    assert rate({"type": "package", "amount": "5", "quantity_per_package": "10"}, "21") == D(15)
    assert rate({"type": "package", "amount": "5", "quantity_per_package": "10"}, "0") == D(0)
    assert rate({"type": "dynamic", "multiplier": "1.5"}, "3.333") == D("5.00")
    tiers = [
        {"up_to_amount": None, "flat_price": None, "unit_price": "1"},
        {"up_to_amount": "10", "flat_price": "5", "unit_price": "2"},
        {"up_to_amount": "20", "flat_price": None, "unit_price": "1.5"},
    ]
    volume = {"type": "tiered", "mode": "volume", "tiers": tiers}
    assert rate(volume, "8") == D(5 + 16)
    assert rate(volume, "15") == D("22.5")
    assert rate(volume, "25") == D(25)
    graduated = {"type": "tiered", "mode": "graduated", "tiers": tiers}
    assert rate(graduated, "0") == D(5)  # the first tier always counts
    assert rate(graduated, "8") == D(5 + 16)
    assert rate(graduated, "15") == D(5 + 20 + D("7.5"))
    assert rate(graduated, "25") == D(5 + 20 + 15 + 5)
    assert rate({"type": "unit", "amount": "1", "minimum_amount": "10.005"}, "3") == D("10.01")
    assert rate({"type": "unit", "amount": "1", "maximum_amount": "7"}, "30") == D(7)
    assert rate({"type": "unit", "amount": "0.6"}, "1", currency="JPY") == D(1)


def test_discount_is_the_rounded_percentage_capped_at_the_amount() -> None:
    assert discount_total(D(6), {"percentage": {"percentage": "50"}}, "USD") == D(3)  # E4
    assert discount_total(D("0.19"), {"percentage": {"percentage": "33.3"}}, "USD") == D("0.06")
    assert discount_total(D(5), {"percentage": {"percentage": "150"}}, "USD") == D(5)
    assert discount_total(D(5), {"percentage": None, "usage": None}, "USD") == 0
    assert discount_total(D(5), None, "USD") == 0


# --- targets and diff (docs/credits.md §3.2, §3.4) ------------------------------------------------------


def test_targets_keep_zero_amounts_and_carry_the_charge_fields() -> None:
    view = sub(
        phase(
            "default",
            "2024-01-01",
            item("free", flat("0"), "2024-01-01"),
            item("api", unit("0.10"), "2024-01-01", feature_key="api"),
        )
    )
    targets = {
        x.identity.removeprefix("sub_01/default/"): x
        for x in build_charge_targets(view, t("2024-01-01T00:01"), "credit_only")
    }
    assert sorted(targets) == ["api/v[0]/period[0]", "free/v[0]/period[0]", "free/v[0]/period[1]"]
    free = targets["free/v[0]/period[0]"]
    assert (free.type, free.amount_before_proration, free.amount_after_proration) == ("flat_fee", D(0), D(0))
    api = targets["api/v[0]/period[0]"]
    assert (api.type, api.feature_key, api.invoice_at, api.amount_after_proration) == (
        "usage_based",
        "api",
        t("2024-02-01"),
        None,
    )
    assert api.settlement_mode == "credit_only" and api.pro_rating_enabled


def test_a_created_charge_carries_its_targets_fields_by_name() -> None:
    """The engine builds a new charge positionally (issue 23): each field must still come from the target's field
    of the same name."""
    view = sub(
        phase(
            "default",
            "2024-01-01",
            item("fee", flat("30"), "2024-01-10"),
            item("api", unit("0.10"), "2024-01-01", feature_key="api"),
        )
    )
    world = World("credit_then_invoice")
    targets = {x.identity: x for x in build_charge_targets(view, t("2024-02-15"), "credit_then_invoice")}
    created = world.sync(view, "2024-02-15").new_charges.values()
    assert sorted(c.identity for c in created) == sorted(targets)
    for c in created:
        x = targets[c.identity]
        shared = ["subscription_id", "phase_id", "item_id", "type", "settlement_mode", "currency", "name"]
        shared += ["description", "feature_key", "price", "discounts", "tax_config", "annotations"]
        shared += ["pro_rating_enabled", "pro_rating_mode", "amount_before_proration", "amount_after_proration"]
        assert [getattr(c, f) for f in shared] == [getattr(x, f) for f in shared]
        assert (c.service_period, c.full_service_period, c.billing_period, c.invoice_at) == (
            x.service_period.truncated(),
            x.full_service_period.truncated(),
            x.billing_period.truncated(),
            x.invoice_at,
        )
        assert (c.status, c.quantity, c.rated_amount, c.deleted_at) == ("created", None, None, None)
        assert c.customer_id == "cust_01" and c.id.startswith("chg")
        assert c.advance_after == (c.invoice_at if c.type == "flat_fee" else c.service_period.start)


def test_only_the_service_end_is_compared_and_creates_come_last() -> None:
    world = World("credit_only")
    world.sync(platform_fee(), "2024-01-01T00:01")
    # A price change alone (same periods) plans nothing.
    assert (
        plan_charges(
            build_charge_targets(platform_fee(amount="7"), t("2024-01-01T00:01"), "credit_only"), world.items()
        )
        == ()
    )
    changes = world.sync(platform_fee(end="2024-01-20"), "2024-01-20")
    assert ops(changes) == [
        ("charge_delete", "platform-fee/v[0]/period[1]"),
        ("charge_shrink", "platform-fee/v[0]/period[0]"),
    ]


def test_creation_checks_of_spec_6_2_apply_to_charges() -> None:
    view = sub(phase("default", "2024-01-01", item("api", unit("1"), "2024-01-01", feature_key="")))
    engine = ChargeEngine(customer_id="cust_01", now=t("2024-01-01"), new_id=lambda p: p)
    (target,) = build_charge_targets(view, t("2024-01-01T00:01"), "credit_only")
    with pytest.raises(PlanningError, match="needs the rate card's feature_key"):
        engine.apply_plan([ChargeCreate(target.identity, target)])
    capped = ChargeEngine(customer_id="c", now=t("2024-01-01"), new_id=lambda p: p, customer_deleted_at=t("2024-01-15"))
    (fee, _) = build_charge_targets(platform_fee(), t("2024-01-01T00:01"), "credit_only")
    with pytest.raises(PlanningError, match="after the customer was deleted"):
        capped.apply_plan([ChargeCreate(fee.identity, fee)])


# --- E1, E2: credit_only --------------------------------------------------------------------------


def e1_world(months: int) -> World:
    """E1: each month `sync --as-of M` then `charges advance --as-of M`, M the 1st at 00:01."""
    world = World("credit_only", g("G1", "250"))
    expected = [(D(150), D(0)), (D(50), D(0)), (D(0), D(50)), (D(0), D(150))]
    for n in range(1, months + 1):
        at = f"2024-0{n}-01T00:01"
        world.sync(platform_fee(), at)
        changes = world.advance(at)
        booked = world.charge(f"platform-fee/v[0]/period[{n - 1}]")
        assert [(s.status_before, s.status) for s in changes.status_changes] == [("created", "final")]
        assert booked.status == "final" and booked.advance_after is None
        newest = world.charge(f"platform-fee/v[0]/period[{n}]")
        assert newest.status == "created" and newest.advance_after == newest.invoice_at
        assert (world.remaining("G1"), world.open_advance()) == expected[n - 1]
        assert not world.lines  # no invoice line, ever
    return world


def test_e1_credit_only_four_months() -> None:
    world = e1_world(4)
    r2 = world.item("platform-fee/v[0]/period[2]").run
    r3 = world.item("platform-fee/v[0]/period[3]").run
    assert r2 is not None and world.run_rows(r2.id) == [("G1", "allocation", D(50)), (None, "allocation", D(50))]
    assert r3 is not None and world.run_rows(r3.id) == [(None, "allocation", D(100))]


def test_e2_credit_only_cancelled_mid_period() -> None:
    e2 = e1_world(2)
    changes = e2.sync(platform_fee(end="2024-02-16"), "2024-02-16")
    assert ops(changes) == [
        ("charge_delete", "platform-fee/v[0]/period[2]"),
        ("charge_shrink", "platform-fee/v[0]/period[1]"),
    ]
    c2 = e2.charge("platform-fee/v[0]/period[2]")
    assert c2.status == "deleted" and c2.deleted_at == t("2024-02-16") and c2.advance_after is None
    c1 = e2.item("platform-fee/v[0]/period[1]")
    assert c1.charge.service_period == Period(t("2024-02-01"), t("2024-02-16"))
    assert c1.charge.full_service_period == Period(t("2024-02-01"), t("2024-03-01"))
    assert c1.charge.billing_period == Period(t("2024-02-01"), t("2024-02-16"))
    assert c1.charge.invoice_at == t("2024-02-01")
    assert (c1.charge.amount_after_proration, c1.charge.status) == (D("51.72"), "final")
    assert c1.run is not None and (c1.run.amount, c1.run.credits_total, c1.run.total) == (D("51.72"), D("51.72"), 0)
    assert e2.run_rows(c1.run.id) == [("G1", "allocation", D(100)), ("G1", "correction", D("-48.28"))]
    assert e2.remaining("G1") == D("98.28")
    assert e2.sync(platform_fee(end="2024-02-16"), "2024-02-16").is_empty  # a second sync writes nothing


# --- E3, E4: credit_then_invoice ------------------------------------------------------------------


def test_e3_credit_then_invoice_four_months() -> None:
    world = World("credit_then_invoice", g("G1", "250"))
    view = platform_fee()
    world.sync(view, "2024-01-01T00:01")
    l0 = world.item("platform-fee/v[0]/period[0]").line
    assert l0 is not None and (l0.amount, l0.discounts_total, l0.credits_total, l0.total) == (D(100), 0, None, None)
    assert l0.invoice_id == "inv_g" and not world.rows
    expected = [(D(100), D(0), D(150)), (D(100), D(0), D(50)), (D(50), D(50), D(0)), (D(0), D(100), D(0))]
    for n, (credits, total, g1) in enumerate(expected, start=1):
        at = f"2024-0{n}-01T00:01"
        if n > 1:
            world.sync(view, at)
        draft = world.invoice(at)
        assert draft == f"D{n}"
        it = world.item(f"platform-fee/v[0]/period[{n - 1}]")
        assert it.charge.status == "active" and it.run is not None and it.line is not None
        assert (it.run.amount, it.run.discounts_total, it.run.credits_total, it.run.total) == (
            D(100),
            0,
            credits,
            total,
        )
        assert (it.line.invoice_id, it.line.credits_total, it.line.total) == (draft, credits, total)
        assert world.remaining("G1") == g1
        world.set_status(draft, "issued")
        assert world.charge(f"platform-fee/v[0]/period[{n - 1}]").status == "final"
    assert world.open_advance() == 0
    assert len([r for r in world.rows]) == 3  # April: no row written


def test_e4_discount_then_credits() -> None:
    card = item("in-advance", flat("6"), "2024-01-01")
    card = replace(
        card, rate_card=replace(card.rate_card, discounts={"percentage": {"percentage": "50"}, "usage": None})
    )
    world = World("credit_then_invoice", g("G", "2"))
    world.sync(sub(phase("default", "2024-01-01", card)), "2024-01-01T00:01")
    world.invoice("2024-01-01T00:01")
    p0, p1 = world.item("in-advance/v[0]/period[0]"), world.item("in-advance/v[0]/period[1]")
    assert p0.line is not None and p1.line is not None and p0.run is not None
    assert (p0.line.amount, p0.line.discounts_total, p0.line.credits_total, p0.line.total) == (6, 3, 2, 1)
    assert (p1.line.amount, p1.line.discounts_total, p1.line.credits_total, p1.line.total) == (6, 3, None, None)
    assert (p0.run.amount, p0.run.discounts_total, p0.run.credits_total, p0.run.total) == (6, 3, 2, 1)
    assert world.remaining("G") == 0


# --- E5, E6: issued or draft invoice, then the item is replaced ------------------------------------


def e5_views() -> tuple[SubscriptionView, SubscriptionView]:
    before = sub(phase("default", "2024-01-01", item("in-advance", flat("6"), "2024-01-01", id="it_v0")))
    after = sub(
        phase(
            "default",
            "2024-01-01",
            item("in-advance", flat("6"), "2024-01-01", end="2024-01-02", id="it_v0"),
            item("in-advance", flat("10"), "2024-01-02", id="it_v1"),
        )
    )
    return before, after


def e5_world(paid: bool) -> World:
    before, _ = e5_views()
    world = World("credit_then_invoice", g("G", "2"))
    world.sync(before, "2024-02-01")
    assert sorted(world.lines.values(), key=lambda x: x.invoice_at)[0].amount == 6
    assert world.invoice("2024-01-02") == "D1"
    r0 = world.item("in-advance/v[0]/period[0]").run
    assert r0 is not None and (r0.amount, r0.discounts_total, r0.credits_total, r0.total) == (6, 0, 2, 4)
    if paid:
        world.set_status("D1", "paid")
        assert world.charge("in-advance/v[0]/period[0]").status == "final"
    return world


def test_e5_issued_invoice_then_the_item_is_replaced() -> None:
    world = e5_world(paid=True)
    _, after = e5_views()
    changes = world.sync(after, "2024-02-01")
    assert ops(changes) == [
        ("charge_delete", "in-advance/v[0]/period[1]"),
        ("charge_shrink", "in-advance/v[0]/period[0]"),
        ("validation_issue", "in-advance/v[0]/period[0]"),
        ("charge_create", "in-advance/v[1]/period[0]"),
        ("charge_create", "in-advance/v[1]/period[1]"),
    ]
    c0 = world.item("in-advance/v[0]/period[0]")
    assert c0.charge.service_period == Period(t("2024-01-01"), t("2024-01-02"))
    assert c0.charge.full_service_period == c0.charge.billing_period == Period(t("2024-01-01"), t("2024-02-01"))
    assert (c0.charge.amount_after_proration, c0.charge.status) == (D("0.19"), "final")
    assert c0.run is not None and c0.line is not None
    assert (c0.run.amount, c0.run.credits_total, c0.run.total, c0.line.amount) == (6, 2, 4, 6)
    assert world.remaining("G") == 0
    (issue,) = changes.issues
    assert (issue.invoice_id, issue.severity, issue.code, issue.component, issue.path) == (
        "D1",
        "warning",
        "immutable_invoice_handling_not_supported",
        "subscription-sync",
        f"lines/{c0.line.id}",
    )
    assert (
        issue.message
        == "flat fee line's per unit amount cannot be changed on immutable invoice (new per unit amount: 0.19)"
    )
    c2 = world.item("in-advance/v[1]/period[0]")
    assert c2.charge.service_period == Period(t("2024-01-02"), t("2024-02-01"))
    assert c2.charge.invoice_at == t("2024-01-01") and c2.charge.amount_after_proration == D("9.68")
    assert c2.line is not None and c2.line.amount == D("9.68") and c2.line.invoice_id == "inv_g"
    c3 = world.item("in-advance/v[1]/period[1]")
    assert c3.line is not None and c3.line.amount == 10 and c3.charge.invoice_at == t("2024-02-01")
    assert world.charge("in-advance/v[0]/period[1]").status == "deleted"
    assert world.sync(after, "2024-02-01").is_empty  # step 5 again: no patch, no new issue


def test_e6_draft_invoice_then_the_same_change() -> None:
    world = e5_world(paid=False)
    _, after = e5_views()
    changes = world.sync(after, "2024-02-01")
    assert "validation_issue" not in [p.op for p in changes.patches]
    c0 = world.item("in-advance/v[0]/period[0]")
    assert c0.run is not None and c0.line is not None
    assert c0.line.service_period == Period(t("2024-01-01"), t("2024-01-02"))
    assert c0.line.price.amount == D("0.19") and c0.line.invoice_at == t("2024-01-01")  # type: ignore[union-attr]
    assert (c0.line.amount, c0.line.discounts_total, c0.line.credits_total, c0.line.total) == (
        D("0.19"),
        0,
        D("0.19"),
        0,
    )
    assert (c0.run.amount, c0.run.credits_total, c0.run.total) == (D("0.19"), D("0.19"), 0)
    assert world.run_rows(c0.run.id) == [("G", "allocation", D(2)), ("G", "correction", D("-1.81"))]
    assert world.remaining("G") == D("1.81") and c0.charge.status == "active"
    assert world.invoice("2024-01-02") == "D2"
    c2 = world.item("in-advance/v[1]/period[0]")
    assert c2.run is not None and (c2.run.amount, c2.run.credits_total, c2.run.total) == (
        D("9.68"),
        D("1.81"),
        D("7.87"),
    )
    assert world.remaining("G") == 0


# --- E7: usage ------------------------------------------------------------------------------------


def api_view() -> SubscriptionView:
    return sub(phase("default", "2024-01-01", item("api", unit("0.10"), "2024-01-01", feature_key="api")))


def test_e7_usage_credit_then_invoice() -> None:
    world = World("credit_then_invoice", g("G", "120"))
    world.sync(api_view(), "2024-01-01T00:01")
    u0 = world.item("api/v[0]/period[0]")
    assert u0.charge.status == "created" and u0.charge.invoice_at == t("2024-02-01")
    assert u0.line is not None and u0.line.quantity is None and u0.line.amount is None
    world.advance("2024-01-01T00:01")
    assert world.charge("api/v[0]/period[0]").status == "active"
    with pytest.raises(ChargeError, match="its service period ends at 2024-02-01T00:00:00Z"):
        world.set_quantity("api/v[0]/period[0]", "3000", "2024-01-31")
    assert world.invoice("2024-02-01T00:01") is None  # no quantity yet: not invoiceable
    world.set_quantity("api/v[0]/period[0]", "3000", "2024-02-01")
    u0 = world.item("api/v[0]/period[0]")
    assert (u0.charge.quantity, u0.charge.rated_amount, u0.charge.status) == (3000, 300, "active")
    assert u0.line is not None and (u0.line.quantity, u0.line.amount, u0.line.discounts_total) == (3000, 300, 0)
    world.set_quantity("api/v[0]/period[0]", "3000", "2024-02-02")  # the same again: no-op
    with pytest.raises(ChargeError, match="quantity already set to 3000"):
        world.set_quantity("api/v[0]/period[0]", "10", "2024-02-02")
    assert world.invoice("2024-02-01T00:01") == "D1"
    run = world.item("api/v[0]/period[0]").run
    assert run is not None and (run.amount, run.discounts_total, run.credits_total, run.total) == (300, 0, 120, 180)
    assert (world.remaining("G"), world.open_advance()) == (0, 0)


def test_e7_usage_credit_only() -> None:
    world = World("credit_only", g("G", "120"))
    world.sync(api_view(), "2024-01-01T00:01")
    assert not world.lines
    world.advance("2024-01-01T00:01")
    assert world.charge("api/v[0]/period[0]").status == "active"
    charge = world.set_quantity("api/v[0]/period[0]", "3000", "2024-02-01")
    assert charge.status == "final"
    run = world.item("api/v[0]/period[0]").run
    assert run is not None and (run.amount, run.discounts_total, run.credits_total, run.total) == (300, 0, 300, 0)
    assert world.run_rows(run.id) == [("G", "allocation", D(120)), (None, "allocation", D(180))]
    assert world.open_advance() == 180


def test_set_quantity_refuses_flat_and_deleted_charges() -> None:
    world = World("credit_only")
    world.sync(platform_fee(), "2024-01-01T00:01")
    with pytest.raises(ChargeError, match="is a flat fee charge"):
        world.set_quantity("platform-fee/v[0]/period[0]", "1", "2024-03-01")


# --- E8: one-time fee cancelled -------------------------------------------------------------------


def test_e8_one_time_fee_extended_and_usage_shrunk_by_a_cancellation() -> None:
    def view(end: str | None) -> SubscriptionView:
        return sub(
            phase(
                "default",
                "2024-01-01",
                item("setup", flat("5"), "2024-01-01", cadence=None),
                item("api", unit("1"), "2024-01-01", cadence="P1Y", feature_key="api"),
            ),
            cadence="P1Y",
            end=end,
        )

    s, c, year = t("2024-01-01"), t("2024-01-01T05:00"), t("2025-01-01")
    world = World("credit_then_invoice")
    world.sync(view(None), "2024-01-01T00:01")
    setup, api = world.item("setup/v[0]"), world.item("api/v[0]/period[0]")
    assert setup.charge.service_period == setup.charge.full_service_period == Period(s, s)
    assert setup.charge.billing_period == Period(s, year) and setup.charge.invoice_at == s
    assert setup.charge.amount_after_proration == 5 and setup.line is not None and setup.line.amount == 5
    assert api.charge.service_period == Period(s, year) and api.charge.invoice_at == year
    changes = world.sync(view("2024-01-01T05:00"), "2024-01-01T05:00")
    assert ops(changes) == [("charge_shrink", "api/v[0]/period[0]"), ("charge_extend", "setup/v[0]")]
    setup, api = world.item("setup/v[0]"), world.item("api/v[0]/period[0]")
    assert (
        setup.charge.service_period == setup.charge.full_service_period == setup.charge.billing_period == Period(s, c)
    )
    assert setup.charge.invoice_at == s and setup.charge.amount_after_proration == 5
    assert setup.line is not None and setup.line.service_period == Period(s, c) and setup.line.invoice_at == s
    assert api.charge.service_period == Period(s, c) and api.charge.full_service_period == Period(s, year)
    assert api.charge.billing_period == Period(s, c) and api.charge.invoice_at == c
    assert api.line is not None and api.line.service_period == Period(s, c) and api.line.invoice_at == c
    ids_before = {ch.id for ch in world.charges.values()}
    assert world.sync(view("2024-01-01T05:00"), "2024-01-01T05:00").is_empty
    assert {ch.id for ch in world.charges.values()} == ids_before


# --- E9 -------------------------------------------------------------------------------------------


def test_e9_consumption_order_through_booking() -> None:
    grants = [
        g("GA", "15", created=t("2024-01-01T00:00:01")),
        g("GB", "10", created=t("2024-01-01T00:00:02"), expires_at=t("2024-02-01")),
        g("GC", "25", created=t("2024-01-01T00:00:03"), feature_keys=frozenset({"api"})),
        g("GD", "5", created=t("2024-01-01T00:00:04"), priority=0),
    ]
    world = World("credit_only", *grants)
    view = sub(
        phase(
            "default",
            "2024-01-01",
            item("platform-fee", flat("12"), "2024-01-01"),
            item("api", unit("0.10"), "2024-01-01", feature_key="api"),
        )
    )
    for at in ("2024-01-01T00:01", "2024-02-01T00:01"):
        world.sync(view, at)
        world.advance(at)
    world.set_quantity("api/v[0]/period[0]", "300", "2024-02-01T00:01")

    def rows(short: str) -> list:
        run = world.item(short).run
        assert run is not None
        return world.run_rows(run.id)

    assert rows("platform-fee/v[0]/period[0]") == [("GD", "allocation", 5), ("GB", "allocation", 7)]
    assert rows("platform-fee/v[0]/period[1]") == [("GA", "allocation", 12)]
    assert rows("api/v[0]/period[0]") == [("GC", "allocation", 25), ("GA", "allocation", 3), (None, "allocation", 2)]
    assert [world.remaining(x) for x in ("GA", "GB", "GC", "GD")] == [0, 3, 0, 0]


# --- state machine details (docs/credits.md §3.6) ---------------------------------------------------------


def test_credit_then_invoice_zero_flat_has_no_line_and_goes_final_at_invoice_at() -> None:
    world = World("credit_then_invoice")
    world.sync(platform_fee(amount="0"), "2024-01-01T00:01")
    assert not world.lines
    world.advance("2024-01-01T00:01")
    assert world.charge("platform-fee/v[0]/period[0]").status == "final"
    assert world.charge("platform-fee/v[0]/period[1]").status == "created"


def test_advance_twice_writes_nothing_the_second_time() -> None:
    world = World("credit_only", g("G", "500"))
    world.sync(platform_fee(), "2024-03-01T00:01")
    assert not world.advance("2024-03-01T00:01").is_empty
    assert world.advance("2024-03-01T00:01").is_empty


def test_in_arrears_credit_only_flat_is_booked_at_its_service_end() -> None:
    view = sub(phase("default", "2024-01-01", item("fee", flat("30", "in_arrears"), "2024-01-01")))
    world = World("credit_only", g("G", "100"))
    world.sync(view, "2024-02-01T00:01")
    fee = world.charge("fee/v[0]/period[0]")
    assert fee.booked_at == fee.invoice_at == t("2024-02-01") and fee.advance_after == t("2024-02-01")
    world.advance("2024-01-31")
    assert world.charge("fee/v[0]/period[0]").status == "created"
    world.advance("2024-02-01")
    assert world.charge("fee/v[0]/period[0]").status == "final" and world.remaining("G") == 70


def test_shrinking_a_booked_usage_charge_returns_its_credit_and_asks_for_the_quantity_again() -> None:
    world = World("credit_only", g("G", "1000"))
    view = api_view()
    world.sync(view, "2024-02-01")
    world.set_quantity("api/v[0]/period[0]", "100", "2024-02-01")
    assert world.remaining("G") == 990
    ended = sub(
        phase("default", "2024-01-01", item("api", unit("0.10"), "2024-01-01", feature_key="api")), end="2024-01-20"
    )
    world.sync(ended, "2024-01-20")
    u0 = world.item("api/v[0]/period[0]")
    assert u0.run is None and u0.charge.quantity is None and u0.charge.status == "created"
    assert u0.charge.advance_after == t("2024-01-01") and world.remaining("G") == 1000


# --- a second diff plans nothing ----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    subscriptions(), st.integers(0, 300), st.integers(0, 120), st.sampled_from(["credit_only", "credit_then_invoice"])
)
def test_a_second_sync_plans_nothing(view: SubscriptionView, first: int, later: int, mode: CreditMode) -> None:
    world = World(mode, g("G", "1000"))
    as_of = view.active_from + timedelta(days=first)
    world.sync(view, as_of.isoformat().replace("+00:00", ""))
    second = as_of + timedelta(days=later)
    text = second.isoformat().replace("+00:00", "")
    world.sync(view, text)
    again = plan_charges(build_charge_targets(view, second, mode), world.items())
    assert again == ()
    for it in world.items().values():
        c = it.charge
        if c.is_flat:
            assert c.amount_after_proration == round_cur(c.amount_after_proration or D(0), "USD")
        else:
            assert isinstance(c.price, UsagePrice) and c.feature_key
