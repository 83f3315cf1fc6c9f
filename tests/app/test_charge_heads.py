"""A sync reads the charges' heads alone, and in full only those a patch changes (docs/performance.md "The charges'
heads alone", `worker.domain.decide.ChargeItemsNeeded`): the decision is the one made on every column."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, update

from tests.builders import apply, document, fee, t, usage
from worker.app import sync as sync_module
from worker.app.sync import sync_subscription
from worker.domain.charges.items import ChargeIndex
from worker.errors import ConcurrentWriteError
from worker.store.charges import charges_from_rows, load_charge_items
from worker.store.db import execute_on_cursor
from worker.store.snapshot import _READ_WITH_CHARGE_HEADS
from worker.store.tables import charges

NS, SUB, START = "heads", "sub_heads", "2024-01-01T00:00:00Z"
ITEMS = {"fee": [fee("fee", "10", START)], "api": [usage("api", "0.5", START)]}


def _credit_subscription(db: Engine, active_to: str | None = None) -> None:
    doc = document(NS, ITEMS, subscription_id=SUB, customer_id="c_heads", active_to=active_to)
    apply(db, {**doc, "settlement_mode": "credit_only"})


@pytest.fixture
def read_in_full(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The identities each sync of the test read in full."""
    calls: list[tuple[str, ...]] = []
    real = sync_module.load_charge_items

    def counting(conn: Any, namespace: str, index: ChargeIndex, identities: Any) -> Any:
        calls.append(tuple(identities))
        return real(conn, namespace, index, identities)

    monkeypatch.setattr(sync_module, "load_charge_items", counting)
    return calls


def _printed(result: Any) -> list[tuple[str, str, str, Any]]:
    return [(p.op, p.unique_reference_id, p.reason, p.service_period) for p in result.patches]


def test_a_cancellation_reads_in_full_the_charges_it_shrinks_and_deletes(
    db: Engine, read_in_full: list[tuple[str, ...]]
) -> None:
    _credit_subscription(db)
    first = sync_subscription(db, NS, SUB, as_of=t("2024-06-15"))
    assert first.patches and all(p.op == "charge_create" for p in first.patches)
    assert read_in_full == []  # nothing to change: no charge read in full
    steady = sync_subscription(db, NS, SUB, as_of=t("2024-06-15"))
    assert steady.patches == () and read_in_full == []
    _credit_subscription(db, active_to="2024-03-10T00:00:00Z")  # cancelled in the past: shrinks and deletes
    dry = sync_subscription(db, NS, SUB, as_of=t("2024-06-15"), dry_run=True)  # every column read
    real = sync_subscription(db, NS, SUB, as_of=t("2024-06-15"))
    assert _printed(real) == _printed(dry)
    assert {p.op for p in real.patches} == {"charge_delete", "charge_shrink"}  # March's charges shrink, later ones go
    changed = {p.unique_reference_id for p in real.patches if p.op != "charge_create"}
    assert len(read_in_full) == 1 and set(read_in_full[0]) == changed  # one statement, exactly those charges
    after = sync_subscription(db, NS, SUB, as_of=t("2024-06-15"))
    assert after.patches == () and len(read_in_full) == 1


def test_a_charge_changed_behind_the_lock_is_a_concurrent_write(db: Engine) -> None:
    _credit_subscription(db)
    sync_subscription(db, NS, SUB, as_of=t("2024-06-15"))
    params = {
        "namespace": NS,
        "subscription_id": SUB,
        "customer_id": "c_heads",
        "currency": "USD",
        "now": t("2024-06-15"),
    }
    with db.begin() as conn:
        rows = execute_on_cursor(conn, _READ_WITH_CHARGE_HEADS, params)
        index = charges_from_rows([r for r in rows if r.c_id is not None], "c_")
        identity = sorted(index)[0]
        assert index.missing([identity]) == (identity,)  # a head alone: not buildable from this read
        assert load_charge_items(conn, NS, index, [identity])[identity].charge.id == index.heads[identity].id
        charge_id = index.heads[identity].id
        conn.execute(
            update(charges).where(charges.c.id == charge_id).values(status="deleted", deleted_at=t("2024-06-01"))
        )
        with pytest.raises(ConcurrentWriteError, match=charge_id):
            load_charge_items(conn, NS, index, [identity])
