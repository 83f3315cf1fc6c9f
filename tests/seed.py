"""Seeding rows for store tests, straight into the upstream tables (no document validation)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, update

from worker.store.tables import (
    customers,
    invoice_lines,
    invoices,
    subscription_items,
    subscription_phases,
    subscriptions,
)

_n = itertools.count()


def t(text: str) -> datetime:
    if "T" not in text:
        text += "T00:00:00"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def flat(amount: str, term: str = "in_advance") -> dict[str, Any]:
    return {"type": "flat", "amount": amount, "payment_term": term}


def unit(amount: str) -> dict[str, Any]:
    return {"type": "unit", "amount": amount}


def rate_card(
    name: str, price: dict[str, Any] | None, cadence: str | None = "P1M", feature_key: str | None = None
) -> dict[str, Any]:
    if feature_key is None and price is not None and price["type"] != "flat":
        feature_key = name
    return {
        "name": name,
        "description": None,
        "feature_key": feature_key,
        "billing_cadence": cadence,
        "price": price,
        "discounts": {"percentage": None, "usage": None},
        "tax_config": None,
    }


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
        "rate_card": rate_card(key, price, cadence),
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
