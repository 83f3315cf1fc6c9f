"""Database constraints that protect invariants even against concurrent writers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, update
from sqlalchemy.exc import IntegrityError

from worker.store.tables import customers, invoice_lines, invoices, subscriptions

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T1 = datetime(2024, 2, 1, tzinfo=UTC)


def seed_customer(db: Engine, namespace: str = "acme", customer_id: str = "cust_01") -> None:
    with db.begin() as conn:
        conn.execute(insert(customers).values(namespace=namespace, id=customer_id, name="C"))


def gathering_invoice(invoice_id: str, namespace: str = "acme", currency: str = "USD") -> dict[str, Any]:
    return {
        "namespace": namespace,
        "id": invoice_id,
        "customer_id": "cust_01",
        "currency": currency,
        "type": "gathering",
        "status": "gathering",
        "immutable": False,
    }


def line(line_id: str, invoice_id: str, reference: str | None, namespace: str = "acme") -> dict[str, Any]:
    return {
        "namespace": namespace,
        "id": line_id,
        "invoice_id": invoice_id,
        "currency": "USD",
        "name": "Fee",
        "managed_by": "subscription",
        "unique_reference_id": reference,
        "service_period_start": T0,
        "service_period_end": T1,
        "invoice_at": T0,
        "price": {"type": "flat", "amount": "10", "payment_term": "in_advance"},
    }


def race(db: Engine, writers: list[Callable[[Connection], None]]) -> list[BaseException | None]:
    """Run each writer in its own connection and transaction, all started together."""
    barrier = threading.Barrier(len(writers))
    results: list[BaseException | None] = [None] * len(writers)

    def run(index: int) -> None:
        with db.connect() as conn:
            transaction = conn.begin()
            try:
                barrier.wait(timeout=10)
                writers[index](conn)
                transaction.commit()
            except BaseException as exc:
                transaction.rollback()
                results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_one_gathering_invoice_per_customer_and_currency_under_concurrency(db: Engine) -> None:
    seed_customer(db)
    results = race(
        db,
        [
            lambda conn: conn.execute(insert(invoices).values(gathering_invoice("inv_a"))),
            lambda conn: conn.execute(insert(invoices).values(gathering_invoice("inv_b"))),
        ],
    )
    assert sorted(type(r).__name__ for r in results) == ["IntegrityError", "NoneType"]


def test_gathering_uniqueness_ignores_deleted_other_currencies_and_standard_invoices(db: Engine) -> None:
    seed_customer(db)
    with db.begin() as conn:
        conn.execute(insert(invoices).values(gathering_invoice("inv_a")))
        conn.execute(update(invoices).where(invoices.c.id == "inv_a").values(deleted_at=T0))
        conn.execute(insert(invoices).values(gathering_invoice("inv_b")))
        conn.execute(insert(invoices).values(gathering_invoice("inv_c", currency="EUR")))
        for invoice_id in ("inv_s1", "inv_s2"):
            conn.execute(
                insert(invoices).values(gathering_invoice(invoice_id) | {"type": "standard", "status": "draft"})
            )
    with db.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(insert(invoices).values(gathering_invoice("inv_d")))


def test_one_live_line_per_unique_reference_under_concurrency(db: Engine) -> None:
    seed_customer(db)
    with db.begin() as conn:
        conn.execute(insert(invoices).values(gathering_invoice("inv_a")))
    reference = "sub_01/default/platform-fee/v[0]/period[0]"
    results = race(
        db,
        [
            lambda conn: conn.execute(insert(invoice_lines).values(line("l1", "inv_a", reference))),
            lambda conn: conn.execute(insert(invoice_lines).values(line("l2", "inv_a", reference))),
        ],
    )
    assert sorted(type(r).__name__ for r in results) == ["IntegrityError", "NoneType"]


def test_line_uniqueness_ignores_deleted_lines_null_references_and_other_namespaces(db: Engine) -> None:
    seed_customer(db)
    seed_customer(db, namespace="globex")
    reference = "sub_01/default/fee/v[0]/period[0]"
    with db.begin() as conn:
        conn.execute(insert(invoices).values(gathering_invoice("inv_a")))
        conn.execute(insert(invoices).values(gathering_invoice("inv_a", namespace="globex")))
        conn.execute(insert(invoice_lines).values(line("l1", "inv_a", reference) | {"deleted_at": T0}))
        conn.execute(insert(invoice_lines).values(line("l2", "inv_a", reference)))
        conn.execute(insert(invoice_lines).values(line("l3", "inv_a", None)))
        conn.execute(insert(invoice_lines).values(line("l4", "inv_a", None)))
        conn.execute(insert(invoice_lines).values(line("l2", "inv_a", reference, namespace="globex")))
    with db.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(insert(invoice_lines).values(line("l5", "inv_a", reference)))


def test_invoice_type_is_checked(db: Engine) -> None:
    seed_customer(db)
    with db.begin() as conn, pytest.raises(IntegrityError, match="ck_invoices_type"):
        conn.execute(insert(invoices).values(gathering_invoice("inv_x") | {"type": "proforma"}))


def test_foreign_keys_include_the_namespace(db: Engine) -> None:
    seed_customer(db, namespace="globex")  # same customer id, other namespace
    with db.begin() as conn, pytest.raises(IntegrityError, match="fk_subscriptions_customer"):
        conn.execute(
            insert(subscriptions).values(
                namespace="acme",
                id="sub_01",
                customer_id="cust_01",
                name="S",
                currency="USD",
                billing_cadence="P1M",
                billing_anchor=T0,
                pro_rating_enabled=True,
                pro_rating_mode="prorate_prices",
                active_from=T0,
            )
        )
    with db.begin() as conn, pytest.raises(IntegrityError, match="fk_invoice_lines_invoice"):
        conn.execute(insert(invoice_lines).values(line("l1", "missing", None, namespace="globex")))
