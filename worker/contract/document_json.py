"""The printed shape of a subscription document (docs/contract.md §3, §6): the contract's JSON objects, key
order included, decimals as shortest strings and times as RFC 3339 (also what `subscription_items.rate_card`
stores)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.contract.documents import (
    Discounts,
    DynamicPrice,
    FlatPrice,
    PackagePrice,
    RateCard,
    SubscriptionDocument,
    TieredPrice,
    UnitPrice,
)
from worker.contract.text import format_decimal, format_time


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def price_to_json(price: FlatPrice | UnitPrice | TieredPrice | PackagePrice | DynamicPrice | None) -> Any:
    """The contract's price object, decimals as shortest strings; None for no price."""
    if price is None:
        return None
    if isinstance(price, FlatPrice):
        return {"type": "flat", "amount": _dec(price.amount), "payment_term": price.payment_term}
    body: dict[str, Any]
    if isinstance(price, UnitPrice):
        body = {"type": "unit", "amount": _dec(price.amount)}
    elif isinstance(price, TieredPrice):
        body = {
            "type": "tiered",
            "mode": price.mode,
            "tiers": [
                {
                    "up_to_amount": _dec(tier.up_to_amount),
                    "flat_price": _dec(tier.flat_price),
                    "unit_price": _dec(tier.unit_price),
                }
                for tier in price.tiers
            ],
        }
    elif isinstance(price, PackagePrice):
        body = {
            "type": "package",
            "amount": _dec(price.amount),
            "quantity_per_package": _dec(price.quantity_per_package),
        }
    else:
        body = {"type": "dynamic", "multiplier": _dec(price.multiplier)}
    if price.minimum_amount is not None:
        body["minimum_amount"] = _dec(price.minimum_amount)
    if price.maximum_amount is not None:
        body["maximum_amount"] = _dec(price.maximum_amount)
    return body


def discounts_to_json(discounts: Discounts | None) -> dict[str, Any]:
    discounts = discounts or Discounts()
    return {
        "percentage": None if discounts.percentage is None else {"percentage": _dec(discounts.percentage.percentage)},
        "usage": None if discounts.usage is None else {"quantity": _dec(discounts.usage.quantity)},
    }


def rate_card_to_json(rate_card: RateCard) -> dict[str, Any]:
    """The rate card object as stored in `subscription_items.rate_card` and printed by `get`."""
    return {
        "name": rate_card.name,
        "description": rate_card.description,
        "feature_key": rate_card.feature_key,
        "billing_cadence": rate_card.billing_cadence,
        "price": price_to_json(rate_card.price),
        "discounts": discounts_to_json(rate_card.discounts),
        "tax_config": rate_card.tax_config,
    }


def to_document(document: SubscriptionDocument) -> dict[str, Any]:
    """The document in exactly the contract's shape (key order included)."""
    return {
        "namespace": document.namespace,
        "id": document.id,
        "customer_id": document.customer_id,
        "name": document.name if document.name is not None else document.id,
        "currency": document.currency,
        "billing_cadence": document.billing_cadence,
        "billing_anchor": _time(document.billing_anchor),
        "pro_rating": {"enabled": document.pro_rating.enabled, "mode": document.pro_rating.mode},
        "active_from": _time(document.active_from),
        "active_to": _time(document.active_to),
        "settlement_mode": document.settlement_mode,
        "phases": [
            {
                "key": phase.key,
                "id": phase.id,
                "name": phase.name,
                "active_from": _time(phase.active_from),
                "sort_hint": phase.sort_hint,
                "items": {
                    key: [
                        {
                            "id": version.id,
                            "active_from": _time(version.active_from),
                            "active_to": _time(version.active_to),
                            "annotations": version.annotations,
                            "rate_card": rate_card_to_json(version.rate_card),
                        }
                        for version in versions
                    ]
                    for key, versions in phase.items.items()
                },
            }
            for phase in document.phases
        ],
    }
