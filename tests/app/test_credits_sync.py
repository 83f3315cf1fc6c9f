"""Sync and the charge engine through Postgres (docs/credits.md §3): statements per sync constant in the number of
charges, and properties over random grants, syncs and advance runs (credit conserved, idempotence, order)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text, update

from tests.app.test_sync import count_statements
from tests.builders import flat, item, phase, seed_subscription, set_subscription_end, t, unique
from worker.app.charges import advance_customer
from worker.app.credits import GrantRequest, grant_credit
from worker.app.sync import sync_subscription
from worker.domain.charges.items import ChargeIndex
from worker.domain.decide import SyncPlan, decide
from worker.infra.clock import utcnow
from worker.infra.ids import new_id
from worker.store.snapshot import load_snapshot
from worker.store.tables import subscriptions


def seed(db: Engine, namespace: str, mode: str, start: str = "2000-01-01") -> None:
    seed_subscription(db, phase("default", start, item("fee", flat("10"), start)), start=start, namespace=namespace)
    with db.begin() as conn:
        conn.execute(update(subscriptions).where(subscriptions.c.namespace == namespace).values(settlement_mode=mode))


def charge_statements(db: Engine, months: int, namespace: str, mode: str) -> tuple[int, int, int, int, int]:
    seed(db, namespace, mode)
    grant_credit(db, namespace, GrantRequest("cust_01", "USD", Decimal("25"), effective_at=t("2000-01-01")))
    as_of = t(f"{2000 + months // 12}-{months % 12 + 1:02d}-15")
    first = count_statements(db, lambda: sync_subscription(db, namespace, "sub_01", as_of=as_of))
    advance_customer(db, namespace, "cust_01", as_of=as_of)  # books (credit_only) every past charge
    steady = count_statements(db, lambda: sync_subscription(db, namespace, "sub_01", as_of=as_of))
    set_subscription_end(db, f"{2000 + months // 12}-{months % 12 + 1:02d}-10", namespace=namespace)
    edit = count_statements(db, lambda: sync_subscription(db, namespace, "sub_01", as_of=as_of))
    set_subscription_end(db, f"{2000 + months // 12}-{months % 12 + 1:02d}-01", namespace=namespace)
    again = count_statements(db, lambda: sync_subscription(db, namespace, "sub_01", as_of=as_of))
    with db.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM charges WHERE namespace = :ns"), {"ns": namespace}).scalar_one()
    return n, first, steady, edit, again


def test_statement_count_does_not_grow_with_charges(db: Engine) -> None:
    for mode in ("credit_only", "credit_then_invoice"):
        small = charge_statements(db, 3, unique("small"), mode)
        large = charge_statements(db, 120, unique("large"), mode)
        print(f"\n{mode}: charges, statements of first / steady / edit / edit again: {small} vs {large}")
        assert large[0] > 10 * small[0]
        assert small[1:] == large[1:]
        assert large[2] <= 8


# --- properties ----------------------------------------------------------------------------------------

grants = st.lists(
    st.tuples(st.integers(1, 4000), st.integers(0, 2), st.integers(0, 5)), min_size=0, max_size=3
)  # (amount in cents, priority, effective month offset)
steps = st.lists(st.integers(0, 6), min_size=1, max_size=4)  # months of sync + advance


def state(db: Engine, namespace: str) -> tuple[object, ...]:
    with db.connect() as conn:
        charges = conn.execute(
            text(
                "SELECT unique_reference_id, status, amount_after_proration, advance_after IS NULL FROM charges "
                "WHERE namespace = :ns ORDER BY 1"
            ),
            {"ns": namespace},
        ).all()
        rows = conn.execute(
            text(
                "SELECT c.unique_reference_id, a.grant_id, a.kind, a.amount FROM credit_allocations a "
                "JOIN charges c ON c.namespace = a.namespace AND c.id = a.charge_id "
                "WHERE a.namespace = :ns ORDER BY 1, a.seq"
            ),
            {"ns": namespace},
        ).all()
    return tuple(map(tuple, charges)), tuple(map(tuple, rows))


def check_conservation(db: Engine, namespace: str) -> None:
    with db.connect() as conn:
        bad = conn.execute(
            text(
                "SELECT g.id FROM credit_grants g LEFT JOIN credit_allocations a "
                "ON a.namespace = g.namespace AND a.grant_id = g.id WHERE g.namespace = :ns "
                "GROUP BY g.id, g.amount HAVING g.amount - COALESCE(sum(a.amount), 0) < 0"
            ),
            {"ns": namespace},
        ).all()
        runs = conn.execute(
            text(
                "SELECT r.id FROM charge_runs r LEFT JOIN credit_allocations a "
                "ON a.namespace = r.namespace AND a.run_id = r.id WHERE r.namespace = :ns "
                "GROUP BY r.id, r.credits_total HAVING r.credits_total <> COALESCE(sum(a.amount), 0)"
            ),
            {"ns": namespace},
        ).all()
        booked = conn.execute(
            text(
                "SELECT r.id FROM charge_runs r WHERE r.namespace = :ns AND r.deleted_at IS NULL "
                "AND r.credits_total <> r.amount - r.discounts_total"
            ),
            {"ns": namespace},
        ).all()
    assert bad == [] and runs == [] and booked == []


@settings(
    max_examples=8,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # each example is ~10 transactions: no slow shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(grants=grants, months=steps, cancel=st.one_of(st.none(), st.integers(1, 150)))
def test_credit_only_conserves_credit_and_converges(
    db: Engine, grants: list[tuple[int, int, int]], months: list[int], cancel: int | None
) -> None:
    """Credit is conserved (no grant below zero, credits_total = Σ its rows, booked runs fully covered by
    credit or advance); a second sync and a second advance write nothing; the order and duplication of
    advance runs do not change the result."""
    results = []
    for order in (sorted(months), sorted(months, reverse=True) + sorted(months)):
        namespace = unique("prop")
        seed(db, namespace, "credit_only", "2024-01-01")
        for n, (cents, priority, offset) in enumerate(grants):
            grant_credit(
                db,
                namespace,
                GrantRequest(
                    "cust_01",
                    "USD",
                    Decimal(cents) / 100,
                    priority=priority,
                    effective_at=t(f"2024-{offset + 1:02d}-01"),
                    id=f"cgr_{n}",  # the same ids in both runs: their rows compare equal
                ),
            )
        last = max(months)
        as_of = t(f"2024-{last + 1:02d}-01") + timedelta(minutes=1)
        sync_subscription(db, namespace, "sub_01", as_of=as_of)
        for m in order:  # advance runs, in this order, possibly repeated and late
            advance_customer(db, namespace, "cust_01", as_of=t(f"2024-{m + 1:02d}-01") + timedelta(minutes=1))
        advance_customer(db, namespace, "cust_01", as_of=as_of)
        if cancel is not None:
            set_subscription_end(db, (t("2024-01-01") + timedelta(days=cancel)).isoformat(), namespace=namespace)
            sync_subscription(db, namespace, "sub_01", as_of=as_of)
        check_conservation(db, namespace)
        before = state(db, namespace)
        assert sync_subscription(db, namespace, "sub_01", as_of=as_of).patches == ()
        assert advance_customer(db, namespace, "cust_01", as_of=as_of) == []
        assert state(db, namespace) == before
        results.append(before)
    assert results[0] == results[1]


def test_a_decision_builds_only_the_charges_it_patches(db: Engine) -> None:
    """docs/performance.md "Charges built when needed": routing and the diff read each charge's head; a charge is
    built from its row only for a patch, so a steady decision builds none."""
    namespace = unique("built")
    seed(db, namespace, "credit_only")
    as_of = t("2001-06-15")
    sync_subscription(db, namespace, "sub_01", as_of=as_of)
    now = utcnow()

    def decided() -> tuple[SyncPlan, ChargeIndex]:
        with db.begin() as conn:
            snapshot = load_snapshot(conn, namespace, "sub_01", now=now)
        return decide(snapshot, as_of=as_of, now=now, ids=new_id), snapshot.charges

    plan, charges = decided()
    assert plan.is_empty and len(charges) > 12
    assert charges.built == 0
    set_subscription_end(db, "2001-06-10", namespace=namespace)
    plan, charges = decided()
    touched = [p for p in plan.charges.patches if p.op != "charge_create"]
    assert {p.op for p in touched} >= {"charge_shrink"}
    assert charges.built == len(touched) < len(charges)
