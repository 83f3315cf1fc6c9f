"""Money is exact at the contract's bounds (docs/contract.md §3 "arithmetic"): 38-digit prices, percentages,
quantities and grants, many charges, through sync, advance, set-quantity and a backfilling grant, checked in
Postgres's own exact numeric arithmetic (nothing computed in a 28-digit context on either side)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tests.app.test_credits_sync import check_conservation
from tests.builders import apply, document, flat, item_version, rate_card, t, unique, unit
from worker.app.charges import advance_customer, set_quantity
from worker.app.credits import GrantRequest, grant_credit
from worker.app.sync import sync_subscription
from worker.domain.money import format_decimal as plain


def digits(n: int, places: int) -> Decimal:
    """The integer `n` scaled by 10^-places, built from its digits (no decimal context involved)."""
    return Decimal((0, tuple(map(int, str(n))), -places))


money38 = st.integers(10**35, 10**38 - 1).map(lambda n: digits(n, 2))  # 38 digits, in cents
small = st.integers(1, 10**6).map(lambda n: digits(n, 2))
percent38 = st.integers(1, 10**38 - 1).map(lambda n: digits(n, 36))  # 0 < p < 100, 38 digits
quantity38 = st.tuples(st.integers(10**36, 10**38 - 1), st.integers(0, 38)).map(lambda q: digits(*q))


def card(name: str, price: dict[str, Any], cadence: str, percentage: Decimal | None) -> dict[str, Any]:
    rc = rate_card(name, price, cadence=cadence, feature_key="api-calls" if price["type"] == "unit" else None)
    if percentage is not None:
        rc["discounts"] = {"percentage": {"percentage": plain(percentage)}, "usage": None}
    return rc


def one(db: Engine, sql: str, namespace: str) -> Any:
    with db.connect() as conn:
        return conn.execute(text(sql), {"ns": namespace}).all()


@settings(
    max_examples=6,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # each example is ~20 transactions: no slow shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    fee=money38,
    weekly=money38,
    price=st.one_of(money38, percent38),
    percentage=percent38,
    grants=st.lists(st.one_of(money38, small), min_size=1, max_size=3),
    late=st.one_of(money38, small),
    quantity=quantity38,
)
def test_credit_only_money_is_exact_at_38_digits(
    db: Engine,
    fee: Decimal,
    weekly: Decimal,
    price: Decimal,
    percentage: Decimal,
    grants: list[Decimal],
    late: Decimal,
    quantity: Decimal,
) -> None:
    namespace = unique("exact")
    items = {
        "fee": [item_version("2024-01-01T00:00:00Z", None, card("Fee", flat(plain(fee)), "P1M", percentage))],
        "weekly": [
            item_version("2024-01-01T00:00:00Z", None, card("W", flat(plain(weekly), "in_arrears"), "P1W", None))
        ],
        "api": [item_version("2024-01-01T00:00:00Z", None, card("API", unit(plain(price)), "P1M", percentage))],
    }
    doc = {**document(namespace, items, active_to="2024-05-17T00:00:00Z"), "settlement_mode": "credit_only"}
    apply(db, doc)
    for n, amount in enumerate(grants):
        grant_credit(db, namespace, GrantRequest("cust_1", "USD", amount, effective_at=t("2024-01-01"), id=f"g{n}"))
    as_of = t("2024-06-01") + timedelta(minutes=1)
    sync_subscription(db, namespace, "sub_1", as_of=as_of)
    advance_customer(db, namespace, "cust_1", as_of=as_of)
    usage = one(db, "SELECT id FROM charges WHERE namespace = :ns AND type = 'usage_based' ORDER BY 1", namespace)
    for (charge_id,) in usage:
        set_quantity(db, namespace, charge_id, quantity, now=as_of)
    grant_credit(db, namespace, GrantRequest("cust_1", "USD", late, id="late"))  # pays open advance first

    check_conservation(db, namespace)  # per grant allocated ≤ amount; credits_total = Σ rows; = amount − discounts
    runs = one(db, "SELECT count(*) FROM charge_runs WHERE namespace = :ns AND deleted_at IS NULL", namespace)
    assert runs[0][0] >= 20  # 4.5 months of a weekly fee, a monthly fee and usage: many charges
    # Each amount as Postgres computes it exactly: the flat fee (prorated only in May), the discount, usage.
    p = plain(percentage)
    wrong = one(
        db,
        f"""SELECT c.unique_reference_id FROM charges c JOIN charge_runs r ON r.namespace = c.namespace
            AND r.charge_id = c.id AND r.deleted_at IS NULL WHERE c.namespace = :ns AND (
            (c.type = 'usage_based' AND (c.rated_amount <> round(c.quantity * {plain(price)}, 2) OR r.amount <> c.rated_amount))
            OR (c.unique_reference_id LIKE '%/fee/%' AND c.service_period_start < '2024-05-01'
                AND r.amount <> {plain(fee)})
            OR (c.unique_reference_id NOT LIKE '%/weekly/%'
                AND r.discounts_total <> LEAST(r.amount, round(r.amount * {p} / 100, 2)))
            OR r.credits_total <> r.amount - r.discounts_total)""",
        namespace,
    )
    assert wrong == []
    # Conservation overall: what grants gave plus the open advance is exactly what the live runs hold (summed
    # by Postgres, exactly).
    ((balanced,),) = one(
        db,
        """SELECT (SELECT COALESCE(sum(amount), 0) FROM credit_allocations WHERE namespace = :ns)
                  = (SELECT sum(amount - discounts_total) FROM charge_runs WHERE namespace = :ns AND deleted_at IS NULL)""",
        namespace,
    )
    assert balanced
