"""New rows as JSON text (docs/performance.md "Charge rows as JSON text"), charges and lines: the same JSON value as
the row dicts encoded by `json_dumps`, whatever the text, amounts and times, and whether rows share an item version."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.charges import Charge
from worker.domain.prices import FlatPrice, UsagePrice
from worker.domain.target import TargetLine
from worker.domain.timeutil import Period
from worker.domain.updater import NewLine
from worker.store.apply import new_line_rows_json
from worker.store.charge_write import _charge_row, charge_rows_json
from worker.store.db import json_dumps, time_text

START = datetime(2024, 1, 1, tzinfo=UTC)

texts = st.text(max_size=12)  # any character: quotes, backslashes, control characters, non-ASCII
instants = st.integers(0, 10**9).map(lambda us: START + timedelta(microseconds=us * 997))
amounts = st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**9), max_value=10**9)
prices = st.one_of(
    st.builds(FlatPrice, amounts, st.sampled_from(["in_advance", "in_arrears"])),
    st.builds(lambda a: UsagePrice("unit", {"type": "unit", "amount": str(a)}), amounts),
)
mappings = st.dictionaries(texts, st.one_of(st.none(), st.booleans(), st.integers(), texts), max_size=3)


@st.composite
def item_versions(draw: Any) -> dict[str, Any]:
    """The fields a charge takes from its item version (shared by the charges of one version)."""
    return {
        "customer_id": draw(texts),
        "subscription_id": draw(texts),
        "phase_id": draw(texts),
        "item_id": draw(texts),
        "type": draw(st.sampled_from(["flat_fee", "usage_based"])),
        "settlement_mode": draw(st.sampled_from(["credit_only", "credit_then_invoice"])),
        "status": draw(st.sampled_from(["created", "active", "final"])),
        "currency": draw(st.sampled_from(["USD", "JPY", "KWD"])),
        "name": draw(texts),
        "description": draw(st.none() | texts),
        "feature_key": draw(st.none() | texts),
        "price": draw(prices),
        "discounts": draw(st.none() | mappings),
        "tax_config": draw(st.none() | mappings),
        "annotations": draw(mappings),
        "pro_rating_enabled": draw(st.booleans()),
        "pro_rating_mode": draw(texts),
    }


@st.composite
def charges(draw: Any) -> list[Charge]:
    versions = draw(st.lists(item_versions(), min_size=1, max_size=3))
    out = []
    for n in range(draw(st.integers(0, 6))):
        start, end = sorted(draw(st.lists(instants, min_size=2, max_size=2)))
        out.append(
            Charge(
                id=f"chg_{n}",
                identity=draw(texts),
                service_period=Period(start, end),
                full_service_period=Period(start, end + timedelta(days=draw(st.integers(0, 3)))),
                billing_period=Period(start, end),
                invoice_at=draw(instants),
                amount_before_proration=draw(st.none() | amounts),
                amount_after_proration=draw(st.none() | amounts),
                quantity=draw(st.none() | amounts),
                rated_amount=draw(st.none() | amounts),
                advance_after=draw(st.none() | instants),
                deleted_at=draw(st.none() | instants),
                **draw(st.sampled_from(versions)),
            )
        )
    return out


@settings(max_examples=200, deadline=None)
@given(charges())
def test_the_text_is_the_row_dicts_json(built: list[Charge]) -> None:
    assert json.loads(charge_rows_json(built)) == json.loads(json_dumps([_charge_row(c) for c in built]))


def test_charges_of_one_item_version_share_its_fields_and_keep_their_own() -> None:
    version: dict[str, Any] = {
        "customer_id": "cust_1",
        "subscription_id": "sub_1",
        "phase_id": "ph_1",
        "item_id": "it_1",
        "type": "flat_fee",
        "settlement_mode": "credit_only",
        "status": "created",
        "currency": "USD",
        "name": 'Fee "A" \\ \u00e9\n',
        "description": None,
        "feature_key": None,
        "price": FlatPrice(Decimal("10.50"), "in_advance"),
        "discounts": None,
        "tax_config": None,
        "annotations": {},
        "pro_rating_enabled": True,
        "pro_rating_mode": "prorate_prices",
    }
    month = Period(START, START + timedelta(days=31))
    rows = json.loads(
        charge_rows_json(
            Charge(
                id=f"chg_{n}",
                identity=f"sub_1/default/fee/v[0]/period[{n}]",
                service_period=month,
                full_service_period=month,
                billing_period=month,
                invoice_at=START,
                amount_before_proration=Decimal("10.50"),
                amount_after_proration=Decimal(n),
                **version,
            )
            for n in range(2)
        )
    )
    assert [(r["id"], r["name"], r["amount_after"], r["price"]) for r in rows] == [
        ("chg_0", 'Fee "A" \\ \u00e9\n', "0", {"type": "flat", "amount": "10.5", "payment_term": "in_advance"}),
        ("chg_1", 'Fee "A" \\ \u00e9\n', "1", {"type": "flat", "amount": "10.5", "payment_term": "in_advance"}),
    ]
    assert rows[0]["service_start"] == "2024-01-01T00:00:00+00:00" and rows[0]["deleted_at"] is None


@st.composite
def new_lines(draw: Any) -> list[NewLine]:
    shared = draw(st.lists(item_versions(), min_size=1, max_size=3))
    price_pool = draw(st.lists(prices, min_size=1, max_size=3))  # lines may share a price object or not
    out = []
    for n in range(draw(st.integers(0, 6))):
        v = draw(st.sampled_from(shared))
        start, end = sorted(draw(st.lists(instants, min_size=2, max_size=2)))
        target = TargetLine(
            draw(texts),  # identity
            v["subscription_id"],
            v["phase_id"],
            v["item_id"],
            v["currency"],
            v["name"],
            v["description"],
            Period(start, end),
            Period(start, end + timedelta(days=draw(st.integers(0, 3)))),
            draw(instants),
            draw(st.sampled_from(price_pool) | prices),
            v["feature_key"],
            v["discounts"],
            v["tax_config"],
        )
        out.append(NewLine(f"il_{n}", draw(st.none() | texts), target))
    return out


def line_row(new: NewLine) -> dict[str, Any]:
    """A new line's row as a dictionary, each field named (the reference the text is held to)."""
    t = new.target
    return {
        "id": new.id,
        "invoice_id": new.invoice_id,
        "currency": t.currency,
        "name": t.name,
        "description": t.description,
        "unique_reference_id": t.identity,
        "subscription_id": t.subscription_id,
        "phase_id": t.phase_id,
        "item_id": t.item_id,
        "billing_start": time_text(t.billing_period.start),
        "billing_end": time_text(t.billing_period.end),
        "service_start": time_text(t.service_period.start),
        "service_end": time_text(t.service_period.end),
        "invoice_at": time_text(t.invoice_at),
        "price": t.price.to_json(),
        "feature_key": t.feature_key,
        "discounts": dict(t.discounts) if t.discounts is not None else None,
        "tax_config": t.tax_config,
    }


@settings(max_examples=200, deadline=None)
@given(new_lines())
def test_new_lines_text_is_the_row_dicts_json(built: list[NewLine]) -> None:
    assert json.loads(new_line_rows_json(built)) == json.loads(json_dumps([line_row(n) for n in built]))
