"""Credit allocation (docs/credits.md §3.8-§3.9): worked examples E1, E2, E3, E6, E7, E9 at domain level, and
invariants over random grants, charges and operations."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.domain.builders import t
from worker.domain.credit_allocation import (
    AllocationRow,
    CreditCharge,
    CreditError,
    Grant,
    Ledger,
    balance,
    consumption_order,
    is_eligible,
)

D = Decimal


def ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def ledger(*grants: Grant, rows: Iterable[AllocationRow] = ()) -> Ledger:
    return Ledger("USD", grants, rows, new_id=ids("cal_"))


def grant(
    gid: str,
    amount: str,
    *,
    effective: str = "2024-01-01",
    created: str | None = None,
    priority: int = 1,
    features: Iterable[str] | None = None,
    expires: str | None = None,
    voided: str | None = None,
) -> Grant:
    return Grant(
        id=gid,
        currency="USD",
        amount=D(amount),
        effective_at=t(effective),
        created_at=t(created or effective),
        priority=priority,
        feature_keys=frozenset(features) if features is not None else None,
        expires_at=t(expires) if expires else None,
        voided_at=t(voided) if voided else None,
    )


def charge(cid: str, booked: str, invoice_at: str | None = None, feature_key: str | None = None) -> CreditCharge:
    return CreditCharge(cid, "USD", feature_key, t(invoice_at or booked), t(booked))


def shape(rows: Iterable[AllocationRow]) -> list[tuple[str, str | None, str, Decimal]]:
    return [(r.run_id, r.grant_id, r.kind, r.amount) for r in rows]


# --- E1: credit_only, four months, then a backfill ------------------------------------------------


def test_e1_credit_only_four_months_then_backfill() -> None:
    g1 = grant("G1", "250")
    book = ledger(g1)
    months = ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]
    for n, month in enumerate(months):
        assert book.allocate(charge(f"C{n}", month), f"R{n}", D(100), exact=True) == D(100)
    assert shape(book.new_rows) == [
        ("R0", "G1", "allocation", D(100)),
        ("R1", "G1", "allocation", D(100)),
        ("R2", "G1", "allocation", D(50)),
        ("R2", None, "allocation", D(50)),
        ("R3", None, "allocation", D(100)),
    ]
    assert book.remaining("G1") == 0
    assert book.open_advance() == D(150)
    before = balance("USD", book.grants, {"G1": book.remaining("G1")}, book.open_advance(), t("2024-04-01T00:01"))
    assert (before.available, before.open_advance, before.balance) == (0, D(150), D(-150))

    # G2 = 200, effective 2024-04-01T12:00, created later (in the past when run): backfill, oldest advance first.
    g2 = grant("G2", "200", effective="2024-04-01T12:00", created="2024-04-02")
    done = len(book.new_rows)
    paid = book.backfill(g2, t("2024-04-02"), {f"C{n}": None for n in range(4)})
    assert paid == D(150)
    advance_r2 = book.new_rows[3]
    advance_r3 = book.new_rows[4]
    new = book.new_rows[done:]
    assert [(r.run_id, r.grant_id, r.kind, r.amount, r.reverses_id, r.backfills_id) for r in new] == [
        ("R2", None, "backfill", D(-50), advance_r2.id, None),
        ("R2", "G2", "backfill", D(50), None, advance_r2.id),
        ("R3", None, "backfill", D(-100), advance_r3.id, None),
        ("R3", "G2", "backfill", D(100), None, advance_r3.id),
    ]
    assert all(r.booked_at == g2.created_at for r in new)
    assert book.remaining("G2") == D(50)
    assert book.open_advance() == 0
    assert book.credits_total("R2") == book.credits_total("R3") == D(100)
    after = balance("USD", book.grants, {"G1": D(0), "G2": D(50)}, book.open_advance(), t("2024-04-02"))
    assert after.balance == D(50)


def test_a_future_grant_never_backfills() -> None:
    book = ledger()
    book.allocate(charge("C0", "2024-01-01"), "R0", D(30), exact=True)
    assert (
        book.backfill(grant("G", "100", effective="2024-05-01", created="2024-04-01"), t("2024-04-01"), {"C0": None})
        == 0
    )
    assert book.open_advance() == D(30)
    assert book.remaining("G") == D(100)


def test_backfill_respects_feature_keys_but_not_dates() -> None:
    book = ledger()
    book.allocate(charge("Cf", "2024-01-01"), "Rf", D(10), exact=True)
    book.allocate(charge("Ca", "2024-01-01", feature_key="api"), "Ra", D(20), exact=True)
    # Restricted to api; created long after both charges were booked: dates play no part.
    g = grant("G", "50", effective="2024-06-01", features=["api"])
    assert book.backfill(g, t("2024-06-01"), {"Cf": None, "Ca": "api"}) == D(20)
    assert book.open_advance() == D(10)
    assert book.remaining("G") == D(30)


# --- E2, E6: corrections --------------------------------------------------------------------------


def test_e2_shrink_of_a_booked_charge_returns_credit_to_its_grant() -> None:
    book = ledger(grant("G1", "250"))
    for n in range(2):
        book.allocate(charge(f"C{n}", f"2024-0{n + 1}-01"), f"R{n}", D(100), exact=True)
    r1_allocation = book.new_rows[1]
    assert book.reconcile(charge("C1", "2024-02-01"), "R1", D("51.72"), exact=True) == D("51.72")
    correction = book.new_rows[-1]
    assert (correction.kind, correction.grant_id, correction.amount, correction.reverses_id) == (
        "correction",
        "G1",
        D("-48.28"),
        r1_allocation.id,
    )
    assert book.remaining("G1") == D("98.28")


def test_e6_draft_shrink_reconciles_not_exact_then_the_next_invoice_takes_the_rest() -> None:
    book = ledger(grant("G", "2"))
    c0 = charge("C0", "2024-01-01")
    assert book.allocate(c0, "R0", D(6), exact=False) == D(2)
    assert book.reconcile(c0, "R0", D("0.19"), exact=False) == D("0.19")
    assert book.new_rows[-1].amount == D("-1.81")
    assert book.remaining("G") == D("1.81")
    assert book.allocate(charge("C2", "2024-01-01"), "R2", D("9.68"), exact=False) == D("1.81")
    assert book.remaining("G") == 0


def test_correcting_a_backfilled_advance_slice_reduces_debt_first_then_returns_newest_grant_payments() -> None:
    book = ledger()
    c = charge("C0", "2024-01-01")
    book.allocate(c, "R0", D(100), exact=True)  # all advance
    book.backfill(grant("G1", "30", created="2024-01-02"), t("2024-01-02"), {"C0": None})
    book.backfill(grant("G2", "20", created="2024-01-03"), t("2024-01-03"), {"C0": None})
    assert book.open_advance() == D(50)
    book.correct(c, "R0", D(70))  # 50 of debt, then 20 back to G2 (newest)
    assert book.open_advance() == 0
    assert (book.remaining("G1"), book.remaining("G2")) == (0, D(20))
    book.correct(c, "R0", D(30))
    assert (book.remaining("G1"), book.remaining("G2")) == (D(30), D(20))
    assert book.credits_total("R0") == 0
    with pytest.raises(CreditError, match="cannot correct"):
        book.correct(c, "R0", D("0.01"))


# --- E3, E7: credit_then_invoice (not exact) and credit_only usage ---------------------------------


def test_e3_credit_then_invoice_takes_what_is_available_and_writes_no_advance() -> None:
    book = ledger(grant("G1", "250"))
    got = [book.allocate(charge(f"C{n}", f"2024-0{n + 1}-01"), f"R{n}", D(100), exact=False) for n in range(4)]
    assert got == [D(100), D(100), D(50), D(0)]
    assert len(book.new_rows) == 3  # April: no row written
    assert book.open_advance() == 0


def test_e7_credit_only_usage_books_the_shortfall_as_advance() -> None:
    book = ledger(grant("G", "120"))
    book.allocate(charge("U0", "2024-02-01", feature_key="api"), "R0", D(300), exact=True)
    assert shape(book.new_rows) == [("R0", "G", "allocation", D(120)), ("R0", None, "allocation", D(180))]
    b = balance("USD", book.grants, {"G": book.remaining("G")}, book.open_advance(), t("2024-02-02"))
    assert (b.available, b.open_advance, b.balance) == (0, D(180), D(-180))


# --- E9: consumption order, restriction, expiry ---------------------------------------------------


def e9_grants() -> list[Grant]:
    return [
        grant("GA", "15", created="2024-01-01T00:00:01"),
        grant("GB", "10", created="2024-01-01T00:00:02", expires="2024-02-01"),
        grant("GC", "25", created="2024-01-01T00:00:03", features=["api"]),
        grant("GD", "5", created="2024-01-01T00:00:04", priority=0),
    ]


def test_e9_consumption_order_priority_restriction_expiry() -> None:
    grants = e9_grants()
    assert [g.id for g in consumption_order(grants)] == ["GD", "GC", "GB", "GA"]
    book = ledger(*grants)
    book.allocate(charge("P0", "2024-01-01"), "R0", D(12), exact=True)
    assert shape(book.new_rows) == [("R0", "GD", "allocation", D(5)), ("R0", "GB", "allocation", D(7))]
    book.allocate(charge("P1", "2024-02-01"), "R1", D(12), exact=True)
    assert shape(book.new_rows[2:]) == [("R1", "GA", "allocation", D(12))]
    book.allocate(charge("U0", "2024-02-01", feature_key="api"), "R2", D(30), exact=True)
    assert shape(book.new_rows[3:]) == [
        ("R2", "GC", "allocation", D(25)),
        ("R2", "GA", "allocation", D(3)),
        ("R2", None, "allocation", D(2)),
    ]
    remaining = {g.id: book.remaining(g.id) for g in grants}
    assert remaining == {"GA": 0, "GB": D(3), "GC": 0, "GD": 0}
    b = balance("USD", grants, remaining, book.open_advance(), t("2024-02-01T12:00"))
    assert (b.available, b.expired, b.open_advance, b.balance) == (0, D(3), D(2), D(-2))


def test_eligibility_rules_one_by_one() -> None:
    c = charge("C", "2024-03-01", invoice_at="2024-02-15")
    assert is_eligible(grant("G", "1"), c, D(1))
    assert not is_eligible(grant("G", "1", effective="2024-02-16"), c, D(1))  # effective after invoice_at
    assert is_eligible(grant("G", "1", effective="2024-02-15"), c, D(1))
    assert not is_eligible(grant("G", "1", expires="2024-03-01"), c, D(1))  # expired at booked_at
    assert is_eligible(grant("G", "1", expires="2024-03-01T00:00:01"), c, D(1))
    assert not is_eligible(grant("G", "1", voided="2024-01-05"), c, D(1))
    assert not is_eligible(grant("G", "1", features=["api"]), c, D(1))  # no feature key: unrestricted only
    assert is_eligible(grant("G", "1", features=["api"]), charge("C", "2024-03-01", feature_key="api"), D(1))
    assert not is_eligible(grant("G", "1"), c, D(0))


def test_grant_status_and_balance_buckets() -> None:
    grants = [
        grant("A", "10"),
        grant("P", "20", effective="2024-03-01"),
        grant("E", "30", expires="2024-02-01"),
        grant("V", "40", voided="2024-01-10"),
    ]
    at = t("2024-02-01")
    assert [g.status(at) for g in grants] == ["active", "pending", "expired", "voided"]
    b = balance("USD", grants, {"A": D(10), "P": D(20), "E": D(30), "V": D(40)}, D(5), at)
    assert (b.available, b.pending, b.expired, b.open_advance, b.balance) == (D(10), D(20), D(30), D(5), D(5))


# --- invariants ----------------------------------------------------------------------------------

BASE = t("2024-01-01")
FEATURES = [None, "api", "storage"]
money = st.integers(1, 5000).map(lambda cents: Decimal(cents).scaleb(-2))
days = st.integers(0, 90).map(lambda d: BASE + timedelta(days=d))


@st.composite
def grants_strategy(draw: st.DrawFn) -> list[Grant]:
    out = []
    for n in range(draw(st.integers(0, 6))):
        effective = draw(days)
        expires = effective + timedelta(days=draw(st.integers(1, 60))) if draw(st.booleans()) else None
        keys = draw(st.sampled_from([None, frozenset({"api"}), frozenset({"storage"}), frozenset({"api", "storage"})]))
        out.append(
            Grant(
                id=f"G{n}",
                currency="USD",
                amount=draw(money),
                effective_at=effective,
                created_at=BASE + timedelta(seconds=n),
                priority=draw(st.integers(0, 2)),
                feature_keys=keys,
                expires_at=expires,
                voided_at=draw(days) if draw(st.integers(0, 5)) == 0 else None,
            )
        )
    return out


charges_strategy = st.builds(
    lambda n, booked, lead, key: CreditCharge(f"C{n}", "USD", key, booked - timedelta(days=lead), booked),
    st.integers(0, 5),
    days,
    st.integers(0, 20),
    st.sampled_from(FEATURES),
)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("allocate"), charges_strategy, money, st.booleans()),
        st.tuples(st.just("reconcile"), charges_strategy, money.map(lambda m: m - Decimal("0.01")), st.booleans()),
        st.tuples(st.just("correct"), charges_strategy, st.integers(1, 100)),
        st.tuples(st.just("backfill"), money, days, st.sampled_from([None, frozenset({"api"})])),
    ),
    max_size=25,
)


def check_conservation(book: Ledger, grants: list[Grant]) -> None:
    rows = book.new_rows
    for g in book.grants:
        spent = sum((r.amount for r in rows if r.grant_id == g.id), Decimal(0))
        assert book.remaining(g.id) == g.amount - spent  # remaining = amount − allocations + corrections
        assert 0 <= book.remaining(g.id) <= g.amount
    for r in rows:
        assert r.amount != 0
        if r.kind == "allocation":
            assert r.amount > 0 and r.reverses_id is None and r.backfills_id is None
        elif r.kind == "correction":
            assert r.amount < 0 and r.reverses_id is not None and r.backfills_id is None
        elif r.amount < 0:
            assert r.grant_id is None and r.reverses_id is not None and r.backfills_id is None
        else:
            assert r.grant_id is not None and r.backfills_id is not None and r.reverses_id is None
        if r.amount > 0:
            assert book.open_part(r) >= 0
    for run in {r.run_id for r in rows}:
        assert book.credits_total(run) >= 0
    assert book.open_advance() >= 0
    at = BASE + timedelta(days=45)
    b = balance("USD", book.grants, {g.id: book.remaining(g.id) for g in book.grants}, book.open_advance(), at)
    active = sum((book.remaining(g.id) for g in book.grants if g.status(at) == "active"), Decimal(0))
    assert b.balance == active - book.open_advance()


@settings(max_examples=150, deadline=None)
@given(grants_strategy(), operations)
def test_credit_is_conserved_and_only_eligible_grants_are_used(grants: list[Grant], ops: list[tuple]) -> None:
    book = ledger(*grants)
    charges_seen: dict[str, CreditCharge] = {}
    backfills = 0
    for op in ops:
        before = len(book.new_rows)
        if op[0] in ("allocate", "reconcile"):
            _, c, amount, exact = op
            c = charges_seen.setdefault(c.id, c)
            if op[0] == "allocate":
                got = book.allocate(c, f"R{c.id}", amount, exact=exact)
                assert got == amount if exact else 0 <= got <= amount
            else:
                assert book.reconcile(c, f"R{c.id}", amount, exact=exact) <= max(amount, Decimal(0))
            for r in book.new_rows[before:]:
                if r.kind == "allocation" and r.grant_id is not None:
                    g = book.grant(r.grant_id)
                    assert g.voided_at is None and g.effective_at <= c.invoice_at
                    assert g.expires_at is None or g.expires_at > c.booked_at
                    assert g.covers(c.feature_key)
        elif op[0] == "correct":
            _, c, percent = op
            c = charges_seen.setdefault(c.id, c)
            total = book.credits_total(f"R{c.id}")
            amount = (total * percent / 100).quantize(Decimal("0.01"))
            if 0 < amount <= total:
                book.correct(c, f"R{c.id}", amount)
                assert book.credits_total(f"R{c.id}") == total - amount
        else:
            _, amount, created, keys = op
            backfills += 1
            g = Grant(f"B{backfills}", "USD", amount, created, created, feature_keys=keys)
            open_before = book.open_advance()
            paid = book.backfill(g, created, {cid: c.feature_key for cid, c in charges_seen.items()})
            assert book.open_advance() == open_before - paid
            assert book.remaining(g.id) == amount - paid
        check_conservation(book, grants)


@settings(max_examples=100, deadline=None)
@given(grants_strategy(), st.lists(st.tuples(charges_strategy, money, st.booleans()), max_size=8), st.randoms())
def test_allocation_does_not_depend_on_the_order_grants_are_listed_in(
    grants: list[Grant], needs: list[tuple[CreditCharge, Decimal, bool]], rnd: object
) -> None:
    shuffled = list(grants)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    results = []
    for listing in (grants, shuffled):
        book = ledger(*listing)
        for c, need, exact in needs:
            book.allocate(c, f"R{c.id}", need, exact=exact)
        results.append(shape(book.new_rows))
    assert results[0] == results[1]


def test_a_ledger_loaded_with_remaining_continues_where_the_rows_left_off() -> None:
    first = ledger(grant("G", "100"))
    c = charge("C0", "2024-01-01")
    first.allocate(c, "R0", D(60), exact=True)
    # Reloaded: grant with its stored remaining, and only the rows of run R0.
    again = Ledger("USD", [grant("G", "100")], first.new_rows, new_id=ids("x"), remaining={"G": D(40)})
    assert again.credits_total("R0") == D(60)
    again.reconcile(c, "R0", D(10), exact=True)
    assert again.remaining("G") == D(90)
    assert again.new_rows[0].seq > first.new_rows[-1].seq


def test_allocate_refuses_a_negative_need_and_another_currency() -> None:
    book = ledger(grant("G", "1"))
    with pytest.raises(CreditError):
        book.allocate(charge("C", "2024-01-01"), "R", D(-1), exact=True)
    with pytest.raises(CreditError):
        book.allocate(CreditCharge("C", "EUR", None, t("2024-01-01"), t("2024-01-01")), "R", D(1), exact=True)


# --- exact at the bounds (docs/contract.md §3 "arithmetic") ----------------------------------------------------


def cents(value: Decimal) -> int:
    """`value` in minor units as an int, read digit by digit (no decimal context involved)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int) and exponent >= -2, value
    n = int("".join(map(str, digits)) or "0") * 10 ** (exponent + 2)
    return -n if sign else n


def from_cents(n: int) -> Decimal:
    """`n` cents as a Decimal, built from its digits (`Decimal(n).scaleb(-2)` would round past 28 digits)."""
    return Decimal((0, tuple(map(int, str(n))), -2))


# 38-digit amounts in cents (the contract's bound), and small ones so that grants run out mid-way.
huge = st.one_of(st.integers(10**35, 10**38 - 1), st.integers(1, 10**4)).map(from_cents)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(huge, min_size=1, max_size=4),
    st.lists(st.tuples(huge, st.booleans(), st.integers(0, 100)), min_size=1, max_size=40),
)
def test_allocation_is_exact_for_38_digit_amounts_and_many_charges(
    grant_amounts: list[Decimal], needs: list[tuple[Decimal, bool, int]]
) -> None:
    """Per grant allocated ≤ amount, a run's credits_total = Σ its rows, an exact allocation covers the need
    to the cent (credit + advance = net): all checked in integer cents, nothing rounded by a 28-digit context."""
    grants = [Grant(f"G{n}", "USD", a, BASE, BASE + timedelta(seconds=n)) for n, a in enumerate(grant_amounts)]
    book = ledger(*grants)
    expected_totals: dict[str, int] = {}
    for n, (need, exact, percent) in enumerate(needs):
        c = CreditCharge(f"C{n}", "USD", None, BASE, BASE)
        got = book.allocate(c, f"R{n}", need, exact=exact)
        if exact:
            assert cents(got) == cents(need)
        back = cents(got) * percent // 100
        if back > 0:
            book.correct(c, f"R{n}", from_cents(back))
        expected_totals[f"R{n}"] = cents(got) - back
    rows = book.new_rows
    for g in grants:
        spent = sum(cents(r.amount) for r in rows if r.grant_id == g.id)
        assert 0 <= spent <= cents(g.amount)
        assert cents(book.remaining(g.id)) == cents(g.amount) - spent
    for run, total in expected_totals.items():
        assert cents(book.credits_total(run)) == total == sum(cents(r.amount) for r in rows if r.run_id == run)
    advance = sum(cents(r.amount) for r in rows if r.grant_id is None)
    assert cents(book.open_advance()) == advance
    granted = sum(cents(g.amount) for g in grants)
    available = sum(cents(book.remaining(g.id)) for g in grants)
    assert cents(
        balance("USD", grants, {g.id: book.remaining(g.id) for g in grants}, book.open_advance(), BASE).balance
    ) == (available - advance)
    assert sum(expected_totals.values()) == granted - available + advance  # credit + advance = what runs hold
