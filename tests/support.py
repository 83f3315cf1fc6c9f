"""Helpers shared by the queue, app, cli, e2e and reliability tests: documents in the CONTRACT §3 shape, seeding, Redis cleanup."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable
from typing import Any

import redis
from sqlalchemy import Engine

from worker.cli.presenters import line_json
from worker.config import Settings
from worker.contract.documents import validate_document
from worker.store.customers import upsert_customer
from worker.store.lines import list_lines
from worker.store.subscriptions import apply_subscription


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def rate_card(name: str, price: dict[str, Any], feature_key: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "description": None,
        "feature_key": feature_key,
        "billing_cadence": "P1M",
        "price": price,
        "discounts": {"percentage": None, "usage": None},
        "tax_config": None,
    }


def fee(item_id: str, amount: str, active_from: str, active_to: str | None = None) -> dict[str, Any]:
    """A monthly flat fee paid in advance."""
    return {
        "id": item_id,
        "active_from": active_from,
        "active_to": active_to,
        "annotations": {},
        "rate_card": rate_card("Platform fee", {"type": "flat", "amount": amount, "payment_term": "in_advance"}),
    }


def usage(item_id: str, unit_price: str, active_from: str, active_to: str | None = None) -> dict[str, Any]:
    """A monthly usage-based (unit price) item."""
    return {
        "id": item_id,
        "active_from": active_from,
        "active_to": active_to,
        "annotations": {},
        "rate_card": rate_card("API calls", {"type": "unit", "amount": unit_price}, "api-calls"),
    }


def document(
    namespace: str,
    items: dict[str, list[dict[str, Any]]],
    *,
    subscription_id: str = "sub_1",
    customer_id: str = "cust_1",
    start: str = "2024-01-01T00:00:00Z",
    active_to: str | None = None,
) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "id": subscription_id,
        "customer_id": customer_id,
        "name": "Plan",
        "currency": "USD",
        "billing_cadence": "P1M",
        "billing_anchor": start,
        "pro_rating": {"enabled": True, "mode": "prorate_prices"},
        "active_from": start,
        "active_to": active_to,
        "phases": [
            {
                "key": "default",
                "id": f"{subscription_id}-default",
                "name": "Default",
                "active_from": start,
                "sort_hint": None,
                "items": copy.deepcopy(items),
            }
        ],
    }


def apply(engine: Engine, doc: dict[str, Any]) -> None:
    """Write the customer (if needed) and the subscription document, as the subscription service would."""
    parsed = validate_document(doc)
    with engine.begin() as conn:
        upsert_customer(conn, parsed.namespace, parsed.customer_id)
        apply_subscription(conn, parsed)


def lines_json(engine: Engine, namespace: str, customer_id: str = "cust_1") -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [line_json(row) for row in list_lines(conn, namespace, customer_id=customer_id)]


_VOLATILE = ("id", "invoice_id")


def comparable(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines without their generated ids (line and invoice ids differ between namespaces and runs)."""
    out = []
    for line in lines:
        item = {k: v for k, v in line.items() if k not in _VOLATILE}
        if item.get("split_line_group"):
            item["split_line_group"] = {k: v for k, v in item["split_line_group"].items() if k != "id"}
        out.append(item)
    return out


def delete_redis_namespace(client: redis.Redis, namespace: str) -> None:
    """Remove every key of one broker namespace (never anything else)."""
    keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def fast_settings(namespace: str, **overrides: object) -> Settings:
    """Quick retries so that failure paths finish in milliseconds."""
    values: dict[str, object] = {
        "broker_namespace": namespace,
        "min_backoff_ms": 10,
        "max_backoff_ms": 50,
        "transient_max_retries": 2,
        "domain_max_retries": 1,
        "shutdown_grace_seconds": 1,
        "metrics_port": 0,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]
