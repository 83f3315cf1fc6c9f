"""Subscription document rules (docs/contract.md §3): every rule refuses with a line naming the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.builders import contract_example, printed_example, two_phase_document, version
from worker.contract.document_json import to_document
from worker.contract.documents import parse_document, validate_document
from worker.contract.problems import DocumentError
from worker.contract.text import format_decimal, format_time, parse_time
from worker.domain.timeutil import Duration

Mutator = Callable[[dict[str, Any]], None]


def problems_of(document: dict[str, Any]) -> list[str]:
    try:
        validate_document(document)
    except DocumentError as exc:
        return exc.lines()
    return []


def refused(mutate: Mutator) -> list[str]:
    document = contract_example()
    mutate(document)
    lines = problems_of(document)
    assert lines, "the document should have been refused"
    return lines


def item0(document: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = document["phases"][0]["items"]["platform-fee"][0]
    return item


def price0(document: dict[str, Any]) -> dict[str, Any]:
    price: dict[str, Any] = item0(document)["rate_card"]["price"]
    return price


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


ITEM = "phases[0].items.platform-fee[0]"
PRICE = f"{ITEM}.rate_card.price"

CASES: list[tuple[str, Mutator, str]] = [
    # ids and keys
    ("namespace charset", lambda d: d.update(namespace="acme/x"), "namespace: must be 1-128 characters"),
    ("namespace first char", lambda d: d.update(namespace="_acme"), "namespace: must be 1-128 characters"),
    ("id too long", lambda d: d.update(id="s" * 129), "id: must be 1-128 characters"),
    ("customer id empty", lambda d: d.update(customer_id=""), "customer_id: must be 1-128 characters"),
    ("phase id charset", lambda d: d["phases"][0].update(id="ph 01"), "phases[0].id: must be 1-128"),
    ("item id charset", lambda d: item0(d).update(id="it/01"), f"{ITEM}.id: must be 1-128"),
    ("phase key colon", lambda d: d["phases"][0].update(key="a:b"), "phases[0].key: must be 1-64 characters"),
    ("phase key too long", lambda d: d["phases"][0].update(key="k" * 65), "phases[0].key: must be 1-64"),
    (
        "item key slash",
        lambda d: d["phases"][0]["items"].update({"a/b": [version("2024-01-01T00:00:00Z")]}),
        "phases[0].items.a/b (key): must be 1-64 characters",
    ),
    # strings
    ("name too long", lambda d: d.update(name="n" * 1025), "name: must be at most 1024 characters"),
    (
        "rate card description too long",
        lambda d: item0(d)["rate_card"].update(description="d" * 1025),
        f"{ITEM}.rate_card.description: must be at most 1024 characters",
    ),
    ("name not a string", lambda d: d.update(name=5), "name: must be a string"),
    # free JSON
    (
        "annotations too deep",
        lambda d: item0(d).update(annotations=nested(17)),
        f"{ITEM}.annotations: must be nested at most 16 levels deep",
    ),
    (
        "annotations too big",
        lambda d: item0(d).update(annotations={"k": "x" * 16 * 1024}),
        f"{ITEM}.annotations: must be at most 16 KiB as JSON",
    ),
    ("annotations not an object", lambda d: item0(d).update(annotations=[1]), f"{ITEM}.annotations: must be"),
    (
        "tax_config too deep",
        lambda d: item0(d)["rate_card"].update(tax_config=nested(17)),
        f"{ITEM}.rate_card.tax_config: must be nested at most 16 levels deep",
    ),
    (
        "tax_config too big",
        lambda d: item0(d)["rate_card"].update(tax_config=["x" * 1000] * 17),
        f"{ITEM}.rate_card.tax_config: must be at most 16 KiB as JSON",
    ),
    # times
    ("time without offset", lambda d: d.update(active_from="2024-01-01T00:00:00"), "active_from: must be an RFC 3339"),
    ("date only", lambda d: d.update(billing_anchor="2024-01-01"), "billing_anchor: must be an RFC 3339"),
    ("impossible date", lambda d: d.update(active_from="2024-02-30T00:00:00Z"), "active_from: is not a valid"),
    ("time as number", lambda d: d.update(active_from=1704067200), "active_from: must be an RFC 3339 time string"),
    ("year before 1970", lambda d: d.update(active_from="1969-12-31T23:59:59Z"), "active_from: must be in the years"),
    (
        "year after 9998 in UTC",
        lambda d: d.update(active_to="9998-12-31T23:00:00-02:00"),
        "active_to: must be in the years 1970-9998",
    ),
    (
        "subscription active_to before active_from",
        lambda d: d.update(active_to="2023-12-31T23:59:59Z"),
        "active_to: must not be before active_from",
    ),
    (
        "item active_to before active_from",
        lambda d: item0(d).update(active_to="2023-12-31T00:00:00Z"),
        f"{ITEM}.active_to: must not be before active_from",
    ),
    # durations
    ("zero duration", lambda d: d.update(billing_cadence="P0D"), "billing_cadence: must be a positive duration"),
    ("negative duration", lambda d: d.update(billing_cadence="-P1M"), "billing_cadence: must be a positive"),
    ("fractional months", lambda d: d.update(billing_cadence="P1.5M"), "billing_cadence: may have a fractional"),
    ("not a duration", lambda d: d.update(billing_cadence="monthly"), "billing_cadence: must be an ISO 8601"),
    ("empty time part", lambda d: d.update(billing_cadence="P1DT"), "billing_cadence: must be an ISO 8601"),
    (
        "rate card cadence fractional days",
        lambda d: item0(d)["rate_card"].update(billing_cadence="P0.5D"),
        f"{ITEM}.rate_card.billing_cadence: may have a fractional part only in its seconds",
    ),
    # decimals
    ("negative amount", lambda d: price0(d).update(amount="-1"), f"{PRICE}.amount: must be a non-negative decimal"),
    ("amount as number", lambda d: price0(d).update(amount=100), f"{PRICE}.amount: must be a decimal written as"),
    ("exponent", lambda d: price0(d).update(amount="1e3"), f"{PRICE}.amount: must be a non-negative decimal"),
    ("nan", lambda d: price0(d).update(amount="NaN"), f"{PRICE}.amount: must be a non-negative decimal"),
    ("infinity", lambda d: price0(d).update(amount="Infinity"), f"{PRICE}.amount: must be a non-negative"),
    (
        "39 digits",
        lambda d: price0(d).update(amount="1" * 20 + "." + "1" * 19),
        f"{PRICE}.amount: must have at most 38",
    ),
    (
        "negative percentage",
        lambda d: item0(d)["rate_card"].update(discounts={"percentage": {"percentage": "-5"}, "usage": None}),
        f"{ITEM}.rate_card.discounts.percentage.percentage: must be a non-negative decimal",
    ),
    # currency
    ("lowercase currency", lambda d: d.update(currency="usd"), "currency: must be a three-letter ISO 4217 code"),
    ("unknown currency", lambda d: d.update(currency="ABC"), "currency: ABC is not an ISO 4217 currency code"),
    # price shapes
    ("unknown price type", lambda d: price0(d).update(type="free"), f"{PRICE}.type: must be one of: flat, unit"),
    ("missing price type", lambda d: price0(d).pop("type"), f"{PRICE}.type: is required"),
    ("missing amount", lambda d: price0(d).pop("amount"), f"{PRICE}.amount: is required"),
    ("bad payment term", lambda d: price0(d).update(payment_term="later"), f"{PRICE}.payment_term: must be one of"),
    (
        "minimum on flat",
        lambda d: price0(d).update(minimum_amount="1"),
        f"{PRICE}.minimum_amount: is allowed only on usage-based prices",
    ),
    (
        "maximum on flat",
        lambda d: price0(d).update(maximum_amount="1"),
        f"{PRICE}.maximum_amount: is allowed only on usage-based prices",
    ),
    (
        "tiered mode",
        lambda d: item0(d)["rate_card"].update(price={"type": "tiered", "mode": "stairs", "tiers": []}),
        f"{PRICE}.mode: must be one of: graduated, volume",
    ),
    (
        "package without quantity",
        lambda d: item0(d)["rate_card"].update(price={"type": "package", "amount": "1"}),
        f"{PRICE}.quantity_per_package: is required",
    ),
    (
        "dynamic without multiplier",
        lambda d: item0(d)["rate_card"].update(price={"type": "dynamic"}),
        f"{PRICE}.multiplier: is required",
    ),
    (
        "unit price unknown field",
        lambda d: item0(d)["rate_card"].update(price={"type": "unit", "amount": "1", "payment_term": "in_advance"}),
        f"{PRICE}.payment_term: is not a known field",
    ),
    (
        "usage discount on flat",
        lambda d: item0(d)["rate_card"].update(discounts={"percentage": None, "usage": {"quantity": "1"}}),
        f"{ITEM}.rate_card.discounts.usage: is allowed only with a usage-based price",
    ),
    (
        "usage discount without price",
        lambda d: item0(d)["rate_card"].update(price=None, discounts={"percentage": None, "usage": {"quantity": "1"}}),
        f"{ITEM}.rate_card.discounts.usage: is allowed only with a usage-based price",
    ),
    (
        "rate card without price field",
        lambda d: item0(d)["rate_card"].pop("price"),
        f"{ITEM}.rate_card.price: is required",
    ),
    # item versions and phases
    (
        "overlapping versions",
        lambda d: d["phases"][0]["items"]["platform-fee"].append(version("2024-06-01T00:00:00Z")),
        "phases[0].items.platform-fee[1].active_from: overlaps version [0], which never ends",
    ),
    (
        "unsorted versions",
        lambda d: d["phases"][0]["items"].update(
            {"fee": [version("2024-03-01T00:00:00Z"), version("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")]}
        ),
        "phases[0].items.fee[1].active_from: versions must be sorted oldest first",
    ),
    (
        "overlap by one second",
        lambda d: d["phases"][0]["items"].update(
            {"fee": [version("2024-01-01T00:00:00Z", "2024-02-01T00:00:01Z"), version("2024-02-01T00:00:00Z")]}
        ),
        "phases[0].items.fee[1].active_from: overlaps version [0], which ends 2024-02-01T00:00:01Z",
    ),
    ("empty version list", lambda d: d["phases"][0]["items"].update(fee=[]), "phases[0].items.fee: must list at least"),
    (
        "duplicate phase key",
        lambda d: d["phases"].append({"key": "default", "active_from": "2024-05-01T00:00:00Z"}),
        "phases[1].key: 'default' is already used by phases[0]",
    ),
    (
        "duplicate phase id",
        lambda d: d["phases"].append({"key": "later", "id": "ph_01", "active_from": "2024-05-01T00:00:00Z"}),
        "phases[1].id: 'ph_01' is already used by phases[0]",
    ),
    (
        "duplicate item id",
        lambda d: d["phases"][0]["items"].update(other=[version("2024-01-01T00:00:00Z", id="it_01")]),
        "phases[0].items.other[0].id: 'it_01' is already used by phases[0].items.platform-fee[0]",
    ),
    (
        "too many phases",
        lambda d: d.update(phases=[{"key": f"p{i}", "active_from": "2024-01-01T00:00:00Z"} for i in range(1001)]),
        "phases: must have at most 1000 entries",
    ),
    (
        "too many item versions",
        lambda d: d["phases"][0].update(
            items={"k": [{"rate_card": {"billing_cadence": None, "price": None}}] * 10_001}
        ),
        "phases: has 10001 item versions; at most 10000 are allowed",
    ),
    # unknown fields and types
    ("typo at top level", lambda d: d.update(active_form="2024-01-01T00:00:00Z"), "active_form: is not a known field"),
    ("typo in item", lambda d: item0(d).update(ratecard={}), f"{ITEM}.ratecard: is not a known field"),
    ("missing customer", lambda d: d.pop("customer_id"), "customer_id: is required"),
    (
        "pro rating mode",
        lambda d: d["pro_rating"].update(mode="none"),
        "pro_rating.mode: must be one of: prorate_prices",
    ),
    (
        "pro rating as string",
        lambda d: d["pro_rating"].update(enabled="true"),
        "pro_rating.enabled: must be true or false",
    ),
    ("sort hint as string", lambda d: d["phases"][0].update(sort_hint="1"), "phases[0].sort_hint: must be an integer"),
    ("sort hint too large", lambda d: d["phases"][0].update(sort_hint=2**31), "phases[0].sort_hint: must be a 32-bit"),
    ("phases not a list", lambda d: d.update(phases={}), "phases: must be a list"),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in CASES], ids=[c[0] for c in CASES])
def test_rule_refuses_with_field_path(mutate: Mutator, expected: str) -> None:
    lines = refused(mutate)
    assert any(line.startswith(expected) for line in lines), lines


def test_contract_example_is_valid_and_prints_identically() -> None:
    document = validate_document(contract_example())
    assert to_document(document) == printed_example()


def test_every_problem_is_reported_on_its_own_line() -> None:
    document = contract_example()
    document.update(namespace="", currency="usd", extra=1)
    lines = problems_of(document)
    assert len(lines) == 3
    assert {line.split(":")[0] for line in lines} == {"namespace", "currency", "extra"}


def test_valid_edge_values_are_accepted() -> None:
    document = contract_example()
    document["id"] = "S" + "x" * 127
    document["phases"][0]["key"] = "k" * 64
    document["active_from"] = document["phases"][0]["active_from"] = "1970-01-01T00:00:00Z"
    document["active_to"] = "9998-12-31T23:59:59.999999Z"
    item0(document)["rate_card"]["price"]["amount"] = "1" * 19 + "." + "1" * 19
    item0(document)["annotations"] = nested(16)
    item0(document)["rate_card"]["tax_config"] = {"k": "x" * (16 * 1024 - 10)}
    document["phases"][0]["items"]["zero-length"] = [
        version("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        version("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"),
        version("2024-02-01T00:00:00Z"),
    ]
    assert problems_of(document) == []


def test_usage_discount_and_limits_on_usage_prices_are_accepted() -> None:
    assert problems_of(two_phase_document()) == []


def test_phases_need_not_start_after_the_subscription() -> None:
    document = contract_example()
    document["phases"][0]["active_from"] = "2023-06-01T00:00:00Z"
    assert problems_of(document) == []


def test_defaults_and_normalisation() -> None:
    document = validate_document(two_phase_document())
    printed = to_document(document)
    assert printed["billing_anchor"] == "2024-01-01T00:00:00Z"
    assert printed["active_to"] == "2025-01-01T00:00:00.25Z"
    trial, paid = printed["phases"]
    assert trial["name"] == "trial"  # name defaults to the key
    assert paid["active_from"] == "2024-02-01T00:00:00Z"
    fees = paid["items"]["platform-fee"]
    assert [fee["rate_card"]["price"]["amount"] for fee in fees] == ["10", "120.5", "99.9"]
    assert fees[2]["rate_card"]["price"]["payment_term"] == "in_advance"
    tiers = paid["items"]["api-calls"][0]["rate_card"]["price"]
    assert tiers["tiers"][0] == {"up_to_amount": "1000", "flat_price": None, "unit_price": "0.01"}
    assert tiers["minimum_amount"] == "1"
    assert "maximum_amount" not in tiers
    assert paid["items"]["api-calls"][0]["rate_card"]["discounts"] == {
        "percentage": {"percentage": "10"},
        "usage": {"quantity": "100"},
    }


def test_missing_rate_card_name_defaults_to_item_key() -> None:
    document = contract_example()
    del item0(document)["rate_card"]["name"]
    assert to_document(validate_document(document))["phases"][0]["items"]["platform-fee"][0]["rate_card"]["name"] == (
        "platform-fee"
    )


def test_parse_document_refuses_bad_json() -> None:
    with pytest.raises(DocumentError, match="not valid JSON"):
        parse_document(b"{")
    with pytest.raises(DocumentError, match="duplicate key 'currency'"):
        parse_document('{"currency": "USD", "currency": "EUR"}')
    with pytest.raises(DocumentError, match="NaN is not allowed"):
        parse_document('{"x": NaN}')
    with pytest.raises(DocumentError, match="must be a JSON object"):
        parse_document("[]")


def test_parse_document_refuses_more_than_one_mebibyte() -> None:
    document = contract_example()
    text = json.dumps(document)
    padded = text[:-1] + " " * (1024 * 1024 - len(text)) + "}"
    assert len(padded.encode()) == 1024 * 1024
    parse_document(padded)  # exactly 1 MiB is fine
    with pytest.raises(DocumentError, match="larger than 1024 KiB"):
        parse_document(padded + " ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P1M", Duration(months=1)),
        ("P1W", Duration(weeks=1)),
        ("PT1.5S", Duration(seconds=Decimal("1.5"))),
        ("P1Y2M3W4DT5H6M7.25S", Duration(1, 2, 3, 4, 5, 6, Decimal("7.25"))),
    ],
)
def test_parse_duration(text: str, expected: Duration) -> None:
    assert Duration.parse(text) == expected
    assert str(Duration.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["", "P", "PT", "P1", "1M", "P1m", "P-1M", "P1MT", "PT1H1D", "P1M1Y", "P1,5S", "P1.5D"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        Duration.parse(text)


def test_time_and_decimal_text_forms() -> None:
    assert parse_time("2024-01-01T02:00:00+02:00") == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_time("2024-01-01T00:00:00.1234567z") == datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert format_time(datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01T00:00:00Z"
    assert format_time(datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)) == "2024-01-01T00:00:00.5Z"
    assert [format_decimal(Decimal(t)) for t in ["100.00", "33.330", "0.000", "1E+2", "0.05", "-1.50"]] == [
        "100",
        "33.33",
        "0",
        "100",
        "0.05",
        "-1.5",
    ]
    digits38 = "9" * 38
    assert format_decimal(Decimal(digits38)) == digits38
    assert format_decimal(Decimal("0." + "0" * 30 + "1")) == "0." + "0" * 30 + "1"


def test_field_problems_and_rules_relating_fields_are_reported_in_one_round() -> None:
    document = two_phase_document()
    document["phases"][0]["items"]["seats"][0]["rate_card"]["name"] = 5  # a field rule, in phases[0]
    document["phases"][1]["items"]["platform-fee"][2]["active_from"] = "2024-05-01T00:00:00Z"  # relates fields
    lines = problems_of(document)
    assert "phases[0].items.seats[0].rate_card.name: must be a string" in lines
    assert any(line.startswith("phases[1].items.platform-fee[2].active_from: overlaps version [1]") for line in lines)
    assert len(lines) == 2
