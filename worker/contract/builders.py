"""Pieces of a subscription document in the docs/contract.md §3 shape, as plain JSON: the demo, the benchmark
and the tests build their documents from these (one rate card, one item version)."""

from __future__ import annotations

from typing import Any


def flat(amount: str, term: str = "in_advance") -> dict[str, Any]:
    """A flat price, paid `in_advance` or `in_arrears`."""
    return {"type": "flat", "amount": amount, "payment_term": term}


def unit(amount: str) -> dict[str, Any]:
    """A usage-based price per unit."""
    return {"type": "unit", "amount": amount}


def rate_card(
    name: str, price: dict[str, Any] | None, *, cadence: str | None = "P1M", feature_key: str | None = None
) -> dict[str, Any]:
    """A rate card without description, discounts or tax config (`cadence` None: a one-time item)."""
    return {
        "name": name,
        "description": None,
        "feature_key": feature_key,
        "billing_cadence": cadence,
        "price": price,
        "discounts": {"percentage": None, "usage": None},
        "tax_config": None,
    }


def item_version(
    active_from: str, active_to: str | None, card: dict[str, Any], *, id: str | None = None
) -> dict[str, Any]:
    """An item version (`id` None: left out, so that the store assigns one)."""
    version: dict[str, Any] = {"active_from": active_from, "active_to": active_to, "annotations": {}, "rate_card": card}
    return {"id": id, **version} if id is not None else version
