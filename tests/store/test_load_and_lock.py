"""`load_and_lock_subscription`: the share-locked subscription row and the customer lock, in one statement."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, pool, text, update
from sqlalchemy import exc as sa_exc

from tests.builders import flat, item, phase, seed_subscription, t
from worker.errors import NotFoundError
from worker.store.locks import lock_customer
from worker.store.tables import subscriptions
from worker.store.view import SYNC_WORK_MEM, load_and_lock_subscription, load_subscription


def test_same_row_as_load_subscription(db: Engine) -> None:
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")), end="2024-06-01")
    with db.begin() as conn:
        assert load_and_lock_subscription(conn, "acme", "sub_01") == load_subscription(conn, "acme", "sub_01")
        with pytest.raises(NotFoundError, match="sub_02"):
            load_and_lock_subscription(conn, "acme", "sub_02")


def test_it_takes_the_customer_lock_of_lock_customer(db: Engine) -> None:
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")))
    other = create_engine(db.url, poolclass=pool.NullPool)
    try:
        with db.begin() as holder:
            lock_customer(holder, "acme", "cust_01")
            with pytest.raises(sa_exc.DBAPIError, match="lock timeout"), other.begin() as waiter:
                load_and_lock_subscription(waiter, "acme", "sub_01", lock_timeout="50ms")
        with other.begin() as waiter:  # released at commit
            load_and_lock_subscription(waiter, "acme", "sub_01", lock_timeout="50ms")
    finally:
        other.dispose()


def test_it_share_locks_the_subscription_row(db: Engine) -> None:
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")))
    other = create_engine(db.url, poolclass=pool.NullPool)
    try:
        with db.begin() as reader:
            load_and_lock_subscription(reader, "acme", "sub_01")
            with pytest.raises(sa_exc.DBAPIError, match="lock timeout"), other.begin() as writer:
                writer.execute(text("SET LOCAL lock_timeout = '50ms'"))
                writer.execute(update(subscriptions).values(active_to=t("2024-06-01")))
    finally:
        other.dispose()


@pytest.mark.parametrize("mode", ["invoice_only", "credit_only", "credit_then_invoice"])
def test_a_sync_transaction_runs_on_generic_plans(db: Engine, mode: str) -> None:
    """docs/performance.md "Generic plans for the sync's read": the lock statement sets `plan_cache_mode` for the rest
    of its transaction only, whatever the settlement mode."""
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")))
    with db.begin() as conn:
        conn.execute(update(subscriptions).values(settlement_mode=mode))
    with db.connect() as conn:
        conn.execute(text("SET plan_cache_mode = auto"))  # the session's own value, restored at the end
        conn.commit()
        with conn.begin():
            load_and_lock_subscription(conn, "acme", "sub_01")
            assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == "force_generic_plan"
        assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == "auto"


def test_a_sync_transaction_has_the_work_memory_of_its_read(db: Engine) -> None:
    """docs/performance.md "The digest of a read with nothing to compare": the lock statement sets `work_mem` for the
    rest of its transaction only; the session's own value is back afterwards."""
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")))
    with db.connect() as conn:
        conn.execute(text("SET work_mem = '3MB'"))  # the session's own value
        conn.commit()
        with conn.begin():
            load_and_lock_subscription(conn, "acme", "sub_01")
            assert conn.execute(text("SHOW work_mem")).scalar_one() == SYNC_WORK_MEM
        assert conn.execute(text("SHOW work_mem")).scalar_one() == "3MB"
        conn.execute(text("RESET work_mem"))
        conn.commit()


def test_a_stored_rate_card_is_parsed_once_per_process() -> None:
    """docs/performance.md "Rate cards parsed once per process": equal stored texts give the one frozen `RateCard`;
    a card that breaks a rule is still refused each time it is read (nothing cached)."""
    import json

    from worker.store.view import rate_card_from_text

    card = {"name": "Seats", "billing_cadence": "P1M", "price": {"type": "flat", "amount": "10"}}
    first = rate_card_from_text(json.dumps(card))
    assert rate_card_from_text(json.dumps(card)) is first
    assert first.name == "Seats" and first.price is not None and first.price.is_flat
    bad = json.dumps({**card, "billing_cadence": "P1Ｍ"})
    for _ in range(2):
        with pytest.raises(ValueError):
            rate_card_from_text(bad)
