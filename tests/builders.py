"""The tests' one builder module: times, subscription documents (docs/contract.md §3 shape), rows seeded straight
into the upstream tables, and what the queue tests share. The document pieces themselves (prices, the
rate card, the item version) are `worker.contract.builders`, shared with the demo and the benchmark;
`tests/domain/builders.py` builds the pure core's objects."""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Connection, Engine, delete, insert, update

from worker.cli.presenters import line_json
from worker.config import Settings
from worker.contract.builders import flat, item_version, rate_card, unit
from worker.contract.documents import validate_document
from worker.contract.events import QUEUE_NAME
from worker.domain.view import SubscriptionView
from worker.store.customers import upsert_customer
from worker.store.lines import list_lines
from worker.store.subscriptions import apply_subscription
from worker.store.tables import (
    customers,
    invoice_lines,
    invoices,
    subscription_items,
    subscription_phases,
    subscriptions,
)

__all__ = ["flat", "item_version", "rate_card", "unit"]  # re-exported for the tests

_n = itertools.count()


def t(text: str) -> datetime:
    """`2024-01-15`, `2024-01-15T10:00`, `2024-01-15T10:00:00.010` → aware UTC datetime."""
    if "T" not in text:
        text += "T00:00:00"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _usage_feature(key: str, price: dict[str, Any] | None) -> str | None:
    return None if price is None or price["type"] == "flat" else key


# --- documents -----------------------------------------------------------------------------------


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


def printed_example() -> dict[str, Any]:
    """The contract's example as stored and printed: `settlement_mode` always shown (docs/credits.md §2.1)."""
    return {**contract_example(), "settlement_mode": "invoice_only"}


def version(
    active_from: str,
    active_to: str | None = None,
    *,
    price: dict[str, Any] | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    price = price or flat("10")
    card = rate_card("Fee", price, feature_key=None if price["type"] == "flat" else "api-calls")
    return item_version(active_from, active_to, card, id=id)


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


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def fee(item_id: str, amount: str, active_from: str, active_to: str | None = None) -> dict[str, Any]:
    """A monthly flat fee paid in advance."""
    return item_version(active_from, active_to, rate_card("Platform fee", flat(amount)), id=item_id)


def usage(item_id: str, unit_price: str, active_from: str, active_to: str | None = None) -> dict[str, Any]:
    """A monthly usage-based (unit price) item."""
    return item_version(
        active_from, active_to, rate_card("API calls", unit(unit_price), feature_key="api-calls"), id=item_id
    )


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
    """Lines without their generated ids (line, invoice and charge ids differ between namespaces and runs; a charge
    line keeps `charge_id: True`)."""
    out = []
    for line in lines:
        item = {k: v for k, v in line.items() if k not in _VOLATILE}
        if "charge_id" in item:
            item["charge_id"] = item["charge_id"] is not None
        if item.get("split_line_group"):
            item["split_line_group"] = {k: v for k, v in item["split_line_group"].items() if k != "id"}
        out.append(item)
    return out


def delete_redis_namespace(client: redis.Redis, namespace: str) -> None:
    """Remove every key of one broker namespace (never anything else)."""
    keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def raw_message(args: Any, actor_name: str = "subscription_event", **changes: Any) -> dict[str, Any]:
    """A Dramatiq message as a foreign producer writes it (docs/operations.md §8), with `changes` to its envelope fields."""
    message_id = str(uuid.uuid4())
    return {
        "queue_name": QUEUE_NAME,
        "actor_name": actor_name,
        "args": args,
        "kwargs": {},
        "options": {"redis_message_id": message_id},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
        **changes,
    }


def enqueue_raw(broker: RedisBroker, body: bytes, redis_id: str | None = None, queue_name: str = QUEUE_NAME) -> str:
    """What a foreign producer does (docs/operations.md §8): HSET the body under its id, RPUSH the id, atomically.
    The id is the message's `options.redis_message_id` when the body has one, else a new one."""
    if redis_id is None:
        try:
            redis_id = str(json.loads(body)["options"]["redis_message_id"])
        except (ValueError, KeyError, TypeError, RecursionError):
            redis_id = str(uuid.uuid4())
    pipe = broker.client.pipeline(transaction=True)
    pipe.hset(f"{broker.namespace}:{queue_name}.msgs", redis_id, body)
    pipe.rpush(f"{broker.namespace}:{queue_name}", redis_id)
    pipe.execute()
    return redis_id


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


# --- rows seeded into the upstream tables -------------------------------------------------------


def item(
    key: str,
    price: dict[str, Any] | None,
    start: str,
    end: str | None = None,
    cadence: str | None = "P1M",
    id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": id or f"it_{next(_n)}",
        "key": key,
        "active_from": t(start),
        "active_to": t(end) if end else None,
        "rate_card": rate_card(key, price, cadence=cadence, feature_key=_usage_feature(key, price)),
    }


def phase(key: str, start: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "start": t(start), "items": list(items)}


def seed_customer(
    conn: Connection, namespace: str = "acme", customer_id: str = "cust_01", deleted_at: datetime | None = None
) -> None:
    conn.execute(insert(customers).values(namespace=namespace, id=customer_id, name=customer_id, deleted_at=deleted_at))


def seed_subscription(
    engine: Engine,
    *phases: dict[str, Any],
    namespace: str = "acme",
    id: str = "sub_01",
    customer_id: str = "cust_01",
    start: str = "2024-01-01",
    anchor: str | None = None,
    end: str | None = None,
    currency: str = "USD",
    cadence: str = "P1M",
    with_customer: bool = True,
) -> None:
    """Insert (or replace) a subscription with its phases and items."""
    with engine.begin() as conn:
        if (
            with_customer
            and conn.execute(
                customers.select().where(customers.c.namespace == namespace, customers.c.id == customer_id)
            ).first()
            is None
        ):
            seed_customer(conn, namespace, customer_id)
        conn.execute(delete(subscriptions).where(subscriptions.c.namespace == namespace, subscriptions.c.id == id))
        conn.execute(
            insert(subscriptions).values(
                namespace=namespace,
                id=id,
                customer_id=customer_id,
                name=id,
                currency=currency,
                billing_cadence=cadence,
                billing_anchor=t(anchor or start),
                pro_rating_enabled=True,
                pro_rating_mode="prorate_prices",
                active_from=t(start),
                active_to=t(end) if end else None,
            )
        )
        for ph in phases:
            phase_id = f"{id}_{ph['key']}"
            conn.execute(
                insert(subscription_phases).values(
                    namespace=namespace,
                    id=phase_id,
                    subscription_id=id,
                    key=ph["key"],
                    name=ph["key"],
                    active_from=ph["start"],
                )
            )
            for it in ph["items"]:
                conn.execute(
                    insert(subscription_items).values(
                        namespace=namespace,
                        id=f"{namespace}_{it['id']}",
                        phase_id=phase_id,
                        key=it["key"],
                        active_from=it["active_from"],
                        active_to=it["active_to"],
                        rate_card=it["rate_card"],
                    )
                )


def set_subscription_end(engine: Engine, end: str | None, namespace: str = "acme", id: str = "sub_01") -> None:
    with engine.begin() as conn:
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.namespace == namespace, subscriptions.c.id == id)
            .values(active_to=t(end) if end else None)
        )


def store_unchecked(engine: Engine, namespace: str, id: str, **values: Any) -> None:
    """Overwrite columns of a stored subscription row without validation: a subscription written before
    a rule of docs/contract.md §3 existed (e.g. `active_from` before its first phase, a cadence `P١M`)."""
    with engine.begin() as conn:
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.namespace == namespace, subscriptions.c.id == id)
            .values(**values)
        )


def move_lines_to_new_invoice(
    engine: Engine, line_ids: list[str], status: str, namespace: str = "acme", customer_id: str = "cust_01"
) -> str:
    """Move lines onto a new standard invoice (what invoicing does), with the given status."""
    invoice_id = f"inv_std_{next(_n)}"
    with engine.begin() as conn:
        conn.execute(
            insert(invoices).values(
                namespace=namespace,
                id=invoice_id,
                customer_id=customer_id,
                currency="USD",
                type="standard",
                status=status,
                immutable=status not in ("draft",),
                number=invoice_id,
            )
        )
        conn.execute(
            update(invoice_lines)
            .where(invoice_lines.c.namespace == namespace, invoice_lines.c.id.in_(line_ids))
            .values(invoice_id=invoice_id)
        )
    return invoice_id


def store_view(db: Engine, view: SubscriptionView, settlement_mode: str = "invoice_only") -> None:
    """Replace every customer's data by the subscription of a hypothesis view (tests/domain/strategies.py), stored
    straight into the upstream tables with its customer."""
    r = view.record
    with db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE customers CASCADE")
        conn.execute(insert(customers).values(namespace=r.namespace, id=r.customer_id, name="c"))
        conn.execute(
            insert(subscriptions).values(
                namespace=r.namespace,
                id=r.id,
                customer_id=r.customer_id,
                name=r.id,
                currency=r.currency,
                billing_cadence=str(r.billing_cadence),
                billing_anchor=r.billing_anchor,
                pro_rating_enabled=r.pro_rating_enabled,
                pro_rating_mode=r.pro_rating_mode,
                active_from=r.active_from,
                active_to=r.active_to,
                settlement_mode=settlement_mode,
            )
        )
        for ph in view.phase_records:
            conn.execute(
                insert(subscription_phases).values(
                    namespace=r.namespace,
                    id=ph.id,
                    subscription_id=r.id,
                    key=ph.key,
                    name=ph.name,
                    active_from=ph.active_from,
                    sort_hint=ph.sort_hint,
                )
            )
            for it in ph.items:
                card = it.rate_card
                conn.execute(
                    insert(subscription_items).values(
                        namespace=r.namespace,
                        id=it.id,
                        phase_id=ph.id,
                        key=it.key,
                        active_from=it.active_from,
                        active_to=it.active_to,
                        annotations={},
                        rate_card={
                            "name": card.name,
                            "description": card.description,
                            "feature_key": card.feature_key,
                            "billing_cadence": str(card.billing_cadence) if card.billing_cadence else None,
                            "price": card.price.to_json() if card.price else None,
                            "discounts": None,
                            "tax_config": None,
                        },
                    )
                )
