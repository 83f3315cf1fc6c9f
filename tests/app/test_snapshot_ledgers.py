"""docs/credits.md §3.3: a sync reads allocation rows only for the charges a patch touches — the load asks the pure
decision which booked runs it will touch (worker.domain.decide.touched_runs) before reading any ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, event, update

from tests.builders import flat, item, phase, seed_subscription, set_subscription_end, t
from worker.app.charges import advance_customer
from worker.app.credits import GrantRequest, grant_credit
from worker.app.sync import sync_subscription
from worker.store.tables import subscriptions

AS_OF = t("2024-06-15")


def ledger_reads(db: Engine) -> tuple[int, Any]:
    """Sync as of AS_OF; the number of statements that read allocation rows, and the result."""
    seen: list[str] = []

    def on_execute(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db, "before_cursor_execute", on_execute)
    try:
        result = sync_subscription(db, "acme", "sub_01", as_of=AS_OF)
    finally:
        event.remove(db, "before_cursor_execute", on_execute)
    return sum("FROM credit_allocations a" in s for s in seen), result


def test_allocation_rows_are_read_only_when_a_patch_touches_a_booked_charge(db: Engine) -> None:
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")))
    with db.begin() as conn:
        conn.execute(update(subscriptions).values(settlement_mode="credit_only"))
    grant_credit(db, "acme", GrantRequest("cust_01", "USD", Decimal("25"), effective_at=t("2024-01-01")))
    assert ledger_reads(db)[0] == 0  # the charges are created: no run yet
    advance_customer(db, "acme", "cust_01", as_of=AS_OF)  # books every past charge: live runs with allocations
    reads, steady = ledger_reads(db)
    assert (reads, steady.patches) == (0, ())  # nothing touched: no ledger read
    set_subscription_end(db, "2024-06-10")  # shrinks the booked June charge
    reads, edit = ledger_reads(db)
    assert reads == 1
    assert ("charge_shrink", "sub_01/default/fee/v[0]/period[5]") in {
        (p.op, p.unique_reference_id) for p in edit.patches
    }
