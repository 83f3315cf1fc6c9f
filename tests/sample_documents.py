"""Subscription documents for tests: the CONTRACT §3 example and small variations."""

from __future__ import annotations

import copy
from typing import Any

CONTRACT_EXAMPLE: dict[str, Any] = {
    "namespace": "acme",
    "id": "sub_01",
    "customer_id": "cust_01",
    "name": "Pro plan",
    "currency": "USD",
    "billing_cadence": "P1M",
    "billing_anchor": "2024-01-01T00:00:00Z",
    "pro_rating": {"enabled": True, "mode": "prorate_prices"},
    "active_from": "2024-01-01T00:00:00Z",
    "active_to": None,
    "phases": [
        {
            "key": "default",
            "id": "ph_01",
            "name": "Default",
            "active_from": "2024-01-01T00:00:00Z",
            "sort_hint": None,
            "items": {
                "platform-fee": [
                    {
                        "id": "it_01",
                        "active_from": "2024-01-01T00:00:00Z",
                        "active_to": None,
                        "annotations": {},
                        "rate_card": {
                            "name": "Platform fee",
                            "description": None,
                            "feature_key": None,
                            "billing_cadence": "P1M",
                            "price": {"type": "flat", "amount": "100", "payment_term": "in_advance"},
                            "discounts": {"percentage": None, "usage": None},
                            "tax_config": None,
                        },
                    }
                ]
            },
        }
    ],
}


def contract_example() -> dict[str, Any]:
    """A fresh deep copy of the contract's example document."""
    return copy.deepcopy(CONTRACT_EXAMPLE)


def rate_card(price: dict[str, Any] | None, *, name: str = "Fee", cadence: str | None = "P1M") -> dict[str, Any]:
    return {
        "name": name,
        "description": None,
        "feature_key": None if price is None or price["type"] == "flat" else "api-calls",
        "billing_cadence": cadence,
        "price": price,
        "discounts": {"percentage": None, "usage": None},
        "tax_config": None,
    }


def version(
    active_from: str,
    active_to: str | None = None,
    *,
    price: dict[str, Any] | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "active_from": active_from,
        "active_to": active_to,
        "annotations": {},
        "rate_card": rate_card(price or {"type": "flat", "amount": "10", "payment_term": "in_advance"}),
    }
    if id is not None:
        body["id"] = id
    return body


def two_phase_document() -> dict[str, Any]:
    """No ids anywhere, mixed offsets, two phases, a key with three versions, usage and flat prices."""
    return {
        "namespace": "acme",
        "customer_id": "cust_01",
        "name": "Growth",
        "currency": "EUR",
        "billing_cadence": "P1M",
        "billing_anchor": "2024-01-01T02:00:00+02:00",
        "pro_rating": {"enabled": False, "mode": "prorate_prices"},
        "active_from": "2024-01-01T00:00:00Z",
        "active_to": "2025-01-01T00:00:00.250+00:00",
        "phases": [
            {
                "key": "trial",
                "active_from": "2024-01-01T00:00:00Z",
                "sort_hint": 1,
                "items": {"seats": [version("2024-01-01T00:00:00Z", price=None)]},
            },
            {
                "key": "paid",
                "name": "Paid phase",
                "active_from": "2024-02-01T01:00:00+01:00",
                "items": {
                    "platform-fee": [
                        version("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
                        version(
                            "2024-03-01T00:00:00Z",
                            "2024-06-01T00:00:00Z",
                            price={"type": "flat", "amount": "120.50", "payment_term": "in_arrears"},
                        ),
                        version("2024-06-01T00:00:00Z", price={"type": "flat", "amount": "99.900"}),
                    ],
                    "api-calls": [
                        {
                            "active_from": "2024-02-01T00:00:00Z",
                            "annotations": {"team": {"owner": "billing"}},
                            "rate_card": {
                                "name": "API calls",
                                "description": "Per call",
                                "feature_key": "api-calls",
                                "billing_cadence": "P1M",
                                "price": {
                                    "type": "tiered",
                                    "mode": "graduated",
                                    "tiers": [
                                        {"up_to_amount": "1000", "flat_price": None, "unit_price": "0.0100"},
                                        {"up_to_amount": None, "flat_price": "5", "unit_price": "0.005"},
                                    ],
                                    "minimum_amount": "1.0",
                                },
                                "discounts": {"percentage": {"percentage": "10.0"}, "usage": {"quantity": "100"}},
                                "tax_config": {"stripe": {"code": "txcd_10000000"}},
                            },
                        }
                    ],
                },
            },
        ],
    }
