"""Syncs, advances, invoicing and grants for one customer from several threads at once converge to what
running them one by one gives (docs/credits.md §3.15: every writer takes the customer lock).

Which grant pays which charge depends on the interleaving (a grant created after a booking pays the advance
by backfill, docs/credits.md §3.8), so the comparison is over what must not depend on it: every charge's status,
amount and run totals, the lines, and the customer's balance (Σ remaining, open advance); in credit_then_invoice
the credit each charge got depends on how its lines were batched into invoices, so there the credit is compared in
total (taken, left to invoice, on the lines) rather than per charge."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text, update

from tests.builders import flat, item, phase, seed_subscription, t, unique
from worker.app.charges import advance_customer
from worker.app.credits import GrantRequest, customer_balance, grant_credit
from worker.app.invoicing import invoice_pending_lines
from worker.app.sync import sync_subscription
from worker.store.db import make_engine
from worker.store.tables import subscriptions

AS_OF = t("2024-06-01T00:01")


def seed(db: Engine, namespace: str, mode: str) -> None:
    for n in range(2):  # two subscriptions of the one customer
        seed_subscription(
            db,
            phase("default", "2024-01-01", item("fee", flat(str(10 + n)), "2024-01-01", id=f"fee{n}")),
            namespace=namespace,
            id=f"sub_{n}",
        )
    with db.begin() as conn:
        conn.execute(update(subscriptions).where(subscriptions.c.namespace == namespace).values(settlement_mode=mode))


GRANTS = (("g1", "35"), ("g2", "20"), ("g3", "7.5"))


def grants(db: Engine, namespace: str) -> list[Callable[[], Any]]:
    requests = [GrantRequest("cust_01", "USD", Decimal(a), effective_at=t("2024-01-01"), id=g) for g, a in GRANTS]
    return [lambda r=r: grant_credit(db, namespace, r) for r in requests]


def operations(db: Engine, namespace: str, mode: str) -> list[Callable[[], Any]]:
    """Syncs, advances, invoicing and grants, each twice. In credit_then_invoice credit is taken only when a
    line is invoiced (no backfill), so a grant's place relative to invoicing changes the result by design:
    the grants come first there (the concurrent ones are retries of the same `--id`, no-ops)."""
    ops: list[Callable[[], Any]] = grants(db, namespace) * (1 if mode == "credit_only" else 2)
    for n in range(2):
        ops += [lambda n=n: sync_subscription(db, namespace, f"sub_{n}", as_of=AS_OF)] * 2
    ops += [lambda: advance_customer(db, namespace, "cust_01", as_of=AS_OF)] * 2
    ops += [lambda: invoice_pending_lines(db, namespace, "cust_01", as_of=AS_OF)] * 2
    return ops


def outcome(db: Engine, namespace: str, *, split_by_invoicing: bool = False) -> tuple[Any, ...]:
    with db.connect() as conn:
        charges = conn.execute(
            text(
                "SELECT c.unique_reference_id, c.status, c.amount_after_proration, r.amount, r.credits_total, r.total "
                "FROM charges c LEFT JOIN charge_runs r ON r.namespace = c.namespace AND r.charge_id = c.id "
                "AND r.deleted_at IS NULL WHERE c.namespace = :ns ORDER BY 1"
            ),
            {"ns": namespace},
        ).all()
        lines = conn.execute(
            text(
                "SELECT c.unique_reference_id, i.type, l.amount, l.credits_total, l.total FROM invoice_lines l "
                "JOIN charges c ON c.namespace = l.namespace AND c.id = l.charge_id "
                "JOIN invoices i ON i.namespace = l.namespace AND i.id = l.invoice_id "
                "WHERE l.namespace = :ns AND l.deleted_at IS NULL ORDER BY 1"
            ),
            {"ns": namespace},
        ).all()
    (usd,) = customer_balance(db, namespace, "cust_01", at=AS_OF)
    balance = (usd.available + usd.pending, usd.open_advance)
    if not split_by_invoicing:
        return tuple(map(tuple, charges)), tuple(map(tuple, lines)), balance
    # credit_then_invoice takes credit when a line moves onto a draft (docs/credits.md §3.11): when invoicing
    # runs while a sync is still adding lines, the lines are invoiced in two batches and the credit goes to the
    # first batch's charges. Which charge gets it depends on the interleaving; how much is taken does not.
    per_charge = tuple((ref, status, amount, run_amount) for ref, status, amount, run_amount, _, _ in charges)
    per_line = tuple((ref, kind, amount) for ref, kind, amount, _, _ in lines)
    totals = (sum(r[4] or 0 for r in charges), sum(r[5] or 0 for r in charges), sum(r[4] or 0 for r in lines))
    return per_charge, per_line, balance, totals


def settle(db: Engine, namespace: str) -> None:
    """What the next scheduler tick and event deliveries would do: converge."""
    for n in range(2):
        sync_subscription(db, namespace, f"sub_{n}", as_of=AS_OF)
    advance_customer(db, namespace, "cust_01", as_of=AS_OF)
    invoice_pending_lines(db, namespace, "cust_01", as_of=AS_OF)


@pytest.mark.parametrize("mode", ["credit_only", "credit_then_invoice"])
def test_concurrent_writers_of_one_customer_match_a_sequential_run(db: Engine, database_url: str, mode: str) -> None:
    sequential, concurrent = unique("seq"), unique("conc")
    seed(db, sequential, mode)
    seed(db, concurrent, mode)
    if mode == "credit_then_invoice":
        for op in grants(db, concurrent):
            op()
    for op in operations(db, sequential, mode):
        op()
    settle(db, sequential)

    pool = make_engine(database_url, pool_size=12)
    try:
        ops = operations(pool, concurrent, mode)
        barrier = threading.Barrier(len(ops))
        errors: list[BaseException] = []

        def run(op: Callable[[], Any]) -> None:
            barrier.wait()
            try:
                op()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(op,)) for op in ops]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        settle(pool, concurrent)
    finally:
        pool.dispose()
    split = mode == "credit_then_invoice"
    expected = outcome(db, sequential, split_by_invoicing=split)
    assert outcome(db, concurrent, split_by_invoicing=split) == expected
    assert expected[2][0] >= 0 and expected[0]  # charges were written and credit never went below zero
