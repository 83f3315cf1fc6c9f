"""Decision reuse against real Postgres (docs/sync.md §8.6): a sync that decided an empty plan records a token
(the digest of what it read, and the `as_of` window over which generation takes the same branches); a later sync
in that window whose read digests the same writes the recorded state again and decides nothing. Reuse must never
change an outcome: a sync with reuse ends exactly where one deciding in full (`reuse=False`) does, and any change to
an input it read, to the code, to the line limit or to the time makes the next sync decide in full."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy import event as sa_event

from tests.builders import (
    apply,
    comparable,
    document,
    fee,
    lines_json,
    move_lines_to_new_invoice,
    store_unchecked,
    store_view,
    t,
    usage,
)
from tests.domain.strategies import instants_near
from tests.domain.strategies import subscriptions as views
from worker.app import sync as sync_module
from worker.app.handlers import handle_reconcile_subscription, handle_subscription_event
from worker.app.preview import charge_snapshot
from worker.app.sync import SyncResult, sync_subscription
from worker.bootstrap import actor_settings
from worker.config import DEFAULT_MAX_TARGET_LINES, Settings
from worker.contract.events import ReconcileRequest, SubscriptionEvent
from worker.domain.charges.routing import SETTLEMENT_MODES
from worker.domain.decide import SyncPlan
from worker.domain.errors import InvalidViewError, TargetTooLargeError
from worker.domain.reuse import DecisionToken
from worker.domain.timeutil import BeyondRangeError
from worker.domain.view import SubscriptionView
from worker.store.customers import upsert_customer
from worker.store.tables import (
    ALL_TABLES,
    invoice_lines,
    invoices,
    subscription_phases,
    subscription_sync_states,
    subscriptions,
)

NS, REF = "acme", "ref"  # the subscription under test, and a copy synced in full as the reference
SUB, CUSTOMER, START = "sub_1", "cust_1", "2024-01-01T00:00:00Z"
FEE0 = f"{SUB}/default/fee/v[0]/period[0]"
WRITES, DECIDES = t("2024-01-10"), t("2024-01-12")  # the first sync writes lines; the second records the token
MONTH_END = t("2024-02-01")  # the end of the billing period of both: the token's holds_until
INSIDE = t("2024-01-20")  # an as_of inside the recorded window


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[SyncPlan]:
    """Every plan `sync_subscription` decided or reused during the test, in order."""
    seen: list[SyncPlan] = []
    load_and_decide = sync_module.load_and_decide

    def recording(*args: Any, **kwargs: Any) -> SyncPlan:
        plan = load_and_decide(*args, **kwargs)
        seen.append(plan)
        return plan

    monkeypatch.setattr(sync_module, "load_and_decide", recording)
    return seen


def monthly(namespace: str) -> dict[str, Any]:
    """A monthly in-advance fee and a monthly usage item from January 1st, 2024."""
    return document(namespace, {"fee": [fee("it_fee", "10", START)], "api": [usage("it_api", "0.5", START)]})


def sync(db: Engine, at: datetime, *, namespace: str = NS, now: datetime | None = None, **options: Any) -> SyncResult:
    return sync_subscription(db, namespace, SUB, as_of=at, now=now or at, **options)


def stored(db: Engine, namespace: str = NS) -> Any:
    """The subscription's sync-state row."""
    with db.connect() as conn:
        return conn.execute(
            select(subscription_sync_states).where(subscription_sync_states.c.namespace == namespace)
        ).one()


def stored_token(db: Engine, namespace: str = NS) -> DecisionToken | None:
    """The recorded decision: `decision_digest` is HEAD or HEAD:DIGEST, the window set with a DIGEST only."""
    row = stored(db, namespace)
    _, _, digest = (row.decision_digest or "").partition(":")
    if not digest:
        assert row.decision_holds_from is None and row.decision_holds_until is None  # the window with a digest only
        return None
    return DecisionToken(digest, row.decision_holds_from, row.decision_holds_until)


def every_row(db: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect() as conn:
        return {table.name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr) for table in ALL_TABLES}


def with_token(db: Engine, namespace: str = NS, document: dict[str, Any] | None = None) -> DecisionToken:
    """Apply the document (default `monthly`), sync so that lines are written, then once more: that sync decides
    an empty plan and records its token."""
    apply(db, document or monthly(namespace))
    assert sync(db, WRITES, namespace=namespace).patches != ()
    assert stored_token(db, namespace) is None  # a sync that wrote records nothing
    assert sync(db, DECIDES, namespace=namespace).patches == ()
    token = stored_token(db, namespace)
    assert token is not None
    return token


def statements(db: Engine, fn: Callable[[], object]) -> list[tuple[str, int]]:
    """The first word and the row count of every statement `fn` runs."""
    seen: list[tuple[str, int]] = []

    def after(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        seen.append((statement.split()[0], cursor.rowcount))

    sa_event.listen(db, "after_cursor_execute", after)
    try:
        fn()
    finally:
        sa_event.remove(db, "after_cursor_execute", after)
    return seen


# --- reuse happens ------------------------------------------------------------------------------------------------


def test_a_decision_that_wrote_nothing_is_reused_inside_its_window(db: Engine, plans: list[SyncPlan]) -> None:
    apply(db, monthly(NS))
    first = sync(db, WRITES)
    assert {p.unique_reference_id for p in first.patches} == {
        FEE0,
        f"{SUB}/default/fee/v[0]/period[1]",
        f"{SUB}/default/api/v[0]/period[0]",
    }
    assert (plans[-1].reused, plans[-1].decision, stored_token(db)) == (False, None, None)

    second = sync(db, DECIDES)
    assert second.patches == () and not plans[-1].reused
    token = stored_token(db)
    assert token is not None and plans[-1].decision == token
    assert (token.holds_from, token.holds_until) == (DECIDES, MONTH_END)
    assert (stored(db).has_billables, stored(db).next_sync_after) == (True, MONTH_END)

    before = every_row(db)
    last = MONTH_END - timedelta(microseconds=1)
    result: list[SyncResult] = []
    ran = statements(db, lambda: result.append(sync(db, last, now=last + timedelta(hours=5))))
    plan = plans[-1]
    assert plan.reused and plan.decision == token and plan.as_of == last
    assert plan.is_empty and plan.patches == ()
    assert result[0].patches == () and result[0].state == second.state and result[0].as_of == last
    # the lock, the digested read answering its one row, the sync-state upsert and the COMMIT, these two sent in one
    # pipeline (row counts not known yet when they are sent: worker.store.write.write_plan)
    assert ran == [("WITH", 1), ("WITH", 1), ("INSERT", -1), ("COMMIT", -1)]
    after = every_row(db)
    assert {k: v for k, v in after.items() if k != "subscription_sync_states"} == {
        k: v for k, v in before.items() if k != "subscription_sync_states"
    }
    row = stored(db)
    assert (row.has_billables, row.next_sync_after, row.synced_at) == (True, MONTH_END, last + timedelta(hours=5))
    assert stored_token(db) == token  # the token is kept as it was

    again = sync(db, DECIDES)  # at the window's first instant, too
    assert plans[-1].reused and again.patches == ()


def test_a_reused_sync_reads_one_row_where_a_full_one_reads_them_all(db: Engine, plans: list[SyncPlan]) -> None:
    with_token(db)
    reused = statements(db, lambda: sync(db, INSIDE))
    assert plans[-1].reused
    full = statements(db, lambda: sync(db, INSIDE, reuse=False))
    assert not plans[-1].reused
    assert len(full) == len(reused) == 4  # the lock, the read, the upsert, the COMMIT
    assert full[1][1] > 1 and reused[1] == ("WITH", 1)


def test_reuse_false_decides_in_full_and_clears_the_recorded_decision(db: Engine, plans: list[SyncPlan]) -> None:
    with_token(db)
    result = sync(db, INSIDE, reuse=False)
    assert result.patches == () and not plans[-1].reused
    assert plans[-1].decision is None  # no digest was read: nothing to record
    assert stored_token(db) is None
    sync(db, INSIDE)  # no input head recorded either: decided in full without a digest, recording the head
    assert not plans[-1].reused and stored_token(db) is None
    sync(db, INSIDE)
    assert not plans[-1].reused and stored_token(db) is not None  # the head matches: digested, recorded again
    sync(db, INSIDE)
    assert plans[-1].reused


# --- what records no token ------------------------------------------------------------------------------------------


def test_a_plan_whose_only_patches_are_deduplicated_issues_records_no_token(db: Engine, plans: list[SyncPlan]) -> None:
    """An update of a line on an immutable invoice becomes a validation issue, raised once (docs/sync.md §6.4):
    the later syncs write nothing, but their plan has a patch, so the stored issues mattered: never reused."""
    apply(db, monthly(NS))
    sync(db, WRITES)
    (line,) = [x for x in lines_json(db, NS) if x["unique_reference_id"] == FEE0]
    move_lines_to_new_invoice(db, [line["id"]], "issued", namespace=NS, customer_id=CUSTOMER)
    cancelled = monthly(NS) | {"active_to": "2024-01-20T00:00:00Z"}
    apply(db, cancelled)
    assert "validation_issue" in sync(db, DECIDES).counts()
    for at in (DECIDES, DECIDES + timedelta(days=1)):
        assert sync(db, at).patches == ()
        assert plans[-1].is_empty and plans[-1].patch_plan.patches  # nothing written, yet a patch was decided
        assert plans[-1].decision is None and stored_token(db) is None


def test_a_state_due_now_records_no_token(db: Engine, plans: list[SyncPlan]) -> None:
    """docs/sync.md §7: billables but no processed phase (the paid phase was cut away by the cancellation) make
    `next_sync_after = now`: the state depends on now, so the decision is never reused."""
    doc = document(NS, {}, active_to="2024-02-01T00:00:00Z")  # a first phase without items, then the paid one
    doc["phases"].append(
        {
            "key": "paid",
            "active_from": "2024-03-01T00:00:00Z",
            "items": {"fee": [fee("it_fee", "10", "2024-03-01T00:00:00Z")]},
        }
    )
    apply(db, doc)
    for at in (WRITES, DECIDES, INSIDE):
        result = sync(db, at)
        assert result.patches == () and result.state.next_sync_after == at
        assert plans[-1].decision is None and not plans[-1].reused and stored_token(db) is None


def test_a_subscription_with_a_deletion_time_records_no_token(db: Engine, plans: list[SyncPlan]) -> None:
    """A deletion time is compared with now (docs/sync.md §2.1): even a future one makes the decision depend on it."""
    with_token(db)
    with db.begin() as conn:
        conn.execute(update(subscriptions).where(subscriptions.c.namespace == NS).values(deleted_at=t("2024-03-01")))
    assert sync(db, INSIDE).patches == ()
    assert not plans[-1].reused and plans[-1].decision is None and stored_token(db) is None
    deleted = sync(db, INSIDE, now=t("2024-03-02"))
    assert {p.op for p in deleted.patches} == {"line_delete"} and stored_token(db) is None


def test_a_customer_deleted_before_the_start_records_no_token(db: Engine, plans: list[SyncPlan]) -> None:
    apply(db, monthly(NS))
    with db.begin() as conn:
        upsert_customer(conn, NS, CUSTOMER, deleted_at=t("2023-12-01"))
    for at in (WRITES, DECIDES):
        assert sync(db, at).patches == ()
        assert plans[-1].stopped == "customer_deleted_before_start" and stored_token(db) is None


def test_a_credit_mode_decision_is_reused_but_charges_read_apart_never_are(db: Engine, plans: list[SyncPlan]) -> None:
    """A credit-mode read digests its charges; an invoice_only subscription that still has charges (its mode was
    changed) reads them with a statement of their own, outside the digest: its decisions are never recorded."""
    with_token(db, document=monthly(NS) | {"settlement_mode": "credit_only"})
    assert sync(db, INSIDE).patches == () and plans[-1].reused
    with db.begin() as conn:
        conn.execute(
            update(subscriptions).where(subscriptions.c.namespace == NS).values(settlement_mode="invoice_only")
        )
    for at in (INSIDE, INSIDE + timedelta(days=1)):
        assert sync(db, at).patches == ()
        assert not plans[-1].reused and plans[-1].decision is None and stored_token(db) is None


# --- anything the decision read, changed: the next sync decides in full and ends where a full sync does ----------


def update_the_fee_line(db: Engine, namespace: str, **values: Any) -> None:
    """Write `values` straight into the table, on the first period's fee line."""
    with db.begin() as conn:
        conn.execute(
            update(invoice_lines)
            .where(invoice_lines.c.namespace == namespace, invoice_lines.c.unique_reference_id == FEE0)
            .values(**values)
        )


def change_price_in_the_table(db: Engine, namespace: str) -> None:
    update_the_fee_line(db, namespace, price={"type": "flat", "amount": "99", "payment_term": "in_advance"})


def soft_delete_a_line(db: Engine, namespace: str) -> None:
    update_the_fee_line(db, namespace, deleted_at=DECIDES)


def invoice_a_line(db: Engine, namespace: str) -> None:
    """What invoicing does: the line moves onto a new issued (immutable) invoice."""
    (line,) = [x for x in lines_json(db, namespace) if x["unique_reference_id"] == FEE0]
    move_lines_to_new_invoice(db, [line["id"]], "issued", namespace=namespace, customer_id=CUSTOMER)


def change_the_invoice_status(db: Engine, namespace: str) -> None:
    """Only the invoice row changes: the gathering invoice the lines are on is made immutable and issued."""
    with db.begin() as conn:
        conn.execute(
            update(invoices)
            .where(invoices.c.namespace == namespace, invoices.c.type == "gathering")
            .values(status="issued", immutable=True)
        )


def reapply_with_another_price(db: Engine, namespace: str) -> None:
    doc = monthly(namespace)
    doc["phases"][0]["items"]["fee"][0]["rate_card"]["price"]["amount"] = "12"
    apply(db, doc)


def cancel(db: Engine, namespace: str) -> None:
    apply(db, monthly(namespace) | {"active_to": "2024-01-25T00:00:00Z"})


def end_the_subscription_in_the_table(db: Engine, namespace: str) -> None:
    """Only the subscriptions row changes (no item row is clamped, no apply)."""
    store_unchecked(db, namespace, SUB, active_to=t("2024-01-25"))


def delete_the_customer(db: Engine, namespace: str) -> None:
    with db.begin() as conn:
        upsert_customer(conn, namespace, CUSTOMER, deleted_at=t("2024-01-18"))


def delete_the_subscription(db: Engine, namespace: str) -> None:
    with db.begin() as conn:
        conn.execute(update(subscriptions).where(subscriptions.c.namespace == namespace).values(deleted_at=DECIDES))


def change_next_sync_after(db: Engine, namespace: str) -> None:
    with db.begin() as conn:
        conn.execute(
            update(subscription_sync_states)
            .where(subscription_sync_states.c.namespace == namespace)
            .values(next_sync_after=t("2030-01-01"))
        )


def delete_the_state_row(db: Engine, namespace: str) -> None:
    with db.begin() as conn:
        conn.execute(subscription_sync_states.delete().where(subscription_sync_states.c.namespace == namespace))


CHANGES = [
    change_price_in_the_table,
    soft_delete_a_line,
    invoice_a_line,
    change_the_invoice_status,
    reapply_with_another_price,
    cancel,
    end_the_subscription_in_the_table,
    delete_the_customer,
    delete_the_subscription,
    change_next_sync_after,
    delete_the_state_row,
]


def like_a_full_sync(
    db: Engine, plans: list[SyncPlan], change: Callable[[Engine, str], None], **sync_options: Any
) -> SyncResult:
    """Record a token, make `change`, sync at INSIDE (the token's window) with reuse: it must decide in full and end
    exactly where a reference copy given the same change and synced with `reuse=False` does."""
    for namespace in (NS, REF):
        with_token(db, namespace)
        change(db, namespace)
    result = sync(db, INSIDE, **sync_options)
    assert not plans[-1].reused
    assert stored_token(db) == plans[-1].decision  # recorded only when nothing else was written
    assert plans[-1].decision is None or result.patches == ()
    reference = sync(db, INSIDE, namespace=REF, reuse=False, **sync_options)
    assert comparable(lines_json(db, NS)) == comparable(lines_json(db, REF))
    assert [(p.op, p.unique_reference_id) for p in result.patches] == [
        (p.op, p.unique_reference_id) for p in reference.patches
    ]
    assert result.state == reference.state
    assert (stored(db).has_billables, stored(db).next_sync_after) == (
        reference.state.has_billables,
        reference.state.next_sync_after,
    )
    return result


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.__name__)
def test_a_changed_input_makes_the_next_sync_decide_in_full(
    db: Engine, plans: list[SyncPlan], change: Callable[[Engine, str], None]
) -> None:
    like_a_full_sync(db, plans, change)


def test_a_line_price_changed_in_the_table_is_restored(db: Engine, plans: list[SyncPlan]) -> None:
    result = like_a_full_sync(db, plans, change_price_in_the_table)
    assert [(p.op, p.unique_reference_id) for p in result.patches] == [("line_update", FEE0)]
    (line,) = [x for x in lines_json(db, NS) if x["unique_reference_id"] == FEE0]
    assert line["price"] == {"type": "flat", "amount": "10", "payment_term": "in_advance"}


def test_a_line_deleted_in_the_table_is_created_again(db: Engine, plans: list[SyncPlan]) -> None:
    result = like_a_full_sync(db, plans, soft_delete_a_line)
    assert [(p.op, p.unique_reference_id) for p in result.patches] == [("line_create", FEE0)]


def test_a_reapplied_document_with_another_price_updates_the_lines(db: Engine, plans: list[SyncPlan]) -> None:
    like_a_full_sync(db, plans, reapply_with_another_price)
    fees = [x["price"]["amount"] for x in lines_json(db, NS) if "/fee/" in x["unique_reference_id"]]
    assert fees == ["12", "12"]


def test_a_deleted_customer_caps_the_lines(db: Engine, plans: list[SyncPlan]) -> None:
    like_a_full_sync(db, plans, delete_the_customer)
    ends = {x["unique_reference_id"]: x["service_period"]["to"] for x in lines_json(db, NS)}
    assert ends == {FEE0: "2024-01-18T00:00:00Z", f"{SUB}/default/api/v[0]/period[0]": "2024-01-18T00:00:00Z"}


def test_a_changed_next_sync_after_is_written_back(db: Engine, plans: list[SyncPlan]) -> None:
    like_a_full_sync(db, plans, change_next_sync_after)
    assert stored(db).next_sync_after == MONTH_END


def test_a_sync_state_changed_twice_to_the_same_value_is_written_back(db: Engine, plans: list[SyncPlan]) -> None:
    """The first change is repaired by a full decision, which wrote another state than it read, so it records no
    token (a token digests the state read, and a reuse writes the state it reads: docs/sync.md §8.6). The same
    change made again is repaired again, not reused."""
    with_token(db)
    change_next_sync_after(db, NS)
    sync(db, INSIDE)
    assert not plans[-1].reused and plans[-1].decision is None and stored(db).next_sync_after == MONTH_END
    change_next_sync_after(db, NS)
    sync(db, INSIDE + timedelta(days=1))
    assert not plans[-1].reused and stored(db).next_sync_after == MONTH_END


def test_a_phase_deleted_later_is_reused_until_now_passes_its_deletion(db: Engine, plans: list[SyncPlan]) -> None:
    """Phases are read `deleted_at IS NULL OR deleted_at > now` (docs/sync.md §2.1): a future deletion changes
    nothing until now passes it — the read then differs, and the sync decides in full. (Setting the deletion time
    makes a new version of the phase row: the next sync decides in full once and records again.)"""

    def two_phases(namespace: str) -> dict[str, Any]:
        doc = monthly(namespace)
        upgrade = {"fee": [fee("it_fee_2", "20", "2024-01-25T00:00:00Z")]}
        doc["phases"].append({"key": "upgrade", "active_from": "2024-01-25T00:00:00Z", "items": upgrade})
        return doc

    for namespace in (NS, REF):
        token = with_token(db, namespace, two_phases(namespace))
        assert token.holds_until == t("2024-01-25")  # the billing period ends with the first phase
        with db.begin() as conn:
            conn.execute(
                update(subscription_phases)
                .where(subscription_phases.c.namespace == namespace, subscription_phases.c.key == "upgrade")
                .values(deleted_at=t("2024-01-16"))
            )
    assert sync(db, t("2024-01-13")).patches == () and not plans[-1].reused  # the phase row changed: decided
    assert plans[-1].decision is not None
    assert sync(db, t("2024-01-14")).patches == () and plans[-1].reused  # still live at now: reused
    result = sync(db, t("2024-01-17"))
    assert not plans[-1].reused
    reference = sync(db, t("2024-01-17"), namespace=REF, reuse=False)
    assert result.counts() == reference.counts() == {"line_update": 2, "line_create": 1}  # open again: to Feb 1
    assert comparable(lines_json(db, NS)) == comparable(lines_json(db, REF))


# --- the time, the limit and the code -----------------------------------------------------------------------------


def test_an_as_of_past_the_window_decides_in_full_and_generates_the_next_period(
    db: Engine, plans: list[SyncPlan]
) -> None:
    with_token(db)
    at_end = sync(db, MONTH_END)  # exactly at holds_until (half-open): full; a period start records nothing (§3.2)
    assert not plans[-1].reused and at_end.patches == () and stored_token(db) is None
    later = sync(db, MONTH_END + timedelta(microseconds=1))
    assert not plans[-1].reused
    assert {p.unique_reference_id for p in later.patches} == {
        f"{SUB}/default/fee/v[0]/period[2]",
        f"{SUB}/default/api/v[0]/period[1]",
    }
    assert stored(db).next_sync_after == t("2024-03-01")


def test_an_as_of_before_the_window_decides_in_full(db: Engine, plans: list[SyncPlan]) -> None:
    """A backfill: before the start the horizon is the start (docs/sync.md §3.2), so the lines beyond it go."""
    token = with_token(db)
    same = sync(db, token.holds_from - timedelta(microseconds=1))
    assert not plans[-1].reused and same.patches == ()
    earlier = sync(db, t("2023-12-20"))
    assert not plans[-1].reused
    assert {(p.op, p.unique_reference_id) for p in earlier.patches} == {
        ("line_delete", f"{SUB}/default/fee/v[0]/period[1]"),
        ("line_delete", f"{SUB}/default/api/v[0]/period[0]"),
    }


def test_another_line_limit_decides_in_full(db: Engine, plans: list[SyncPlan]) -> None:
    with_token(db)
    sync(db, INSIDE, max_target_lines=50)  # another input head: decided in full (no digest), the head recorded
    assert not plans[-1].reused and stored_token(db) is None
    sync(db, INSIDE, max_target_lines=50)
    assert not plans[-1].reused and stored_token(db) is not None  # the same head: digested and recorded
    sync(db, INSIDE, max_target_lines=50)
    assert plans[-1].reused  # reused under that limit
    sync(db, INSIDE)
    assert not plans[-1].reused  # and not under the default one
    sync(db, INSIDE)
    assert not plans[-1].reused and stored_token(db) is not None
    with pytest.raises(TargetTooLargeError):  # a limit the target breaks is never hidden by a reuse
        sync(db, INSIDE, max_target_lines=2)
    sync(db, INSIDE, max_target_lines=DEFAULT_MAX_TARGET_LINES)
    assert plans[-1].reused  # the failed sync rolled back: the default limit's token stands


def test_another_code_fingerprint_decides_in_full(db: Engine, plans: list[SyncPlan]) -> None:
    token = with_token(db)
    with pytest.MonkeyPatch.context() as patch:  # code_fingerprint() is cached: patch the name the read uses
        patch.setattr("worker.store.snapshot.code_fingerprint", lambda: "the next deployment")
        sync(db, INSIDE)  # another input head: decided in full (no digest), the head recorded
        assert not plans[-1].reused and stored_token(db) is None
        sync(db, INSIDE)
        assert not plans[-1].reused
        recorded = stored_token(db)
        assert recorded is not None and recorded.digest != token.digest
        sync(db, INSIDE)
        assert plans[-1].reused
    sync(db, INSIDE)  # back to the code that recorded the first token: decided in full once more
    assert not plans[-1].reused


def test_a_dry_run_never_reuses_and_never_records(db: Engine, plans: list[SyncPlan]) -> None:
    apply(db, monthly(NS))
    sync(db, WRITES)
    before = every_row(db)
    sync(db, DECIDES, dry_run=True)
    assert plans[-1].decision is None and every_row(db) == before  # no token recorded
    sync(db, DECIDES)
    assert stored_token(db) is not None
    before = every_row(db)
    result = sync(db, INSIDE, dry_run=True)
    assert result.patches == () and result.dry_run
    assert not plans[-1].reused and plans[-1].decision is None
    assert every_row(db) == before


# --- the property: reuse never changes an outcome ---------------------------------------------------------------


@st.composite
def timelines(draw: st.DrawFn, view: SubscriptionView) -> list[datetime]:
    """Increasing `as_of`s: the same again, a microsecond later (one after a period start moves the horizon,
    docs/sync.md §3.2), later in the same billing period, exactly at the next period start (or the subscription
    start) or just after it, or days later."""
    at = draw(instants_near(view))
    out = [at]
    kinds = ["again", "a microsecond later", "same period", "same period", "next start", "after next start", "later"]
    for _ in range(draw(st.integers(2, 6))):
        how = draw(st.sampled_from(kinds))
        end = view.active_from if at < view.active_from else None
        if end is None:
            with contextlib.suppress(BeyondRangeError, InvalidViewError):
                end = view.aligned_billing_period(at).end
        if how == "a microsecond later":
            at += timedelta(microseconds=1)
        elif how == "later" or (how != "again" and (end is None or end <= at)):
            at += timedelta(seconds=draw(st.integers(1, 60 * 86400)))
        elif how == "same period":
            assert end is not None
            at += (end - at) * draw(st.integers(1, 99)) / 100
        elif how != "again":
            assert end is not None
            at = end if how == "next start" else end + timedelta(microseconds=1)
        out.append(at)
    return out


def outcome(db: Engine) -> tuple[list[dict[str, Any]], list[dict[str, Any]], tuple[Any, ...]]:
    """The subscription's lines and charges without their ids, and its stored state."""
    with db.connect() as conn:
        charge_rows = sorted(
            ({k: v for k, v in row.items() if k != "id"} for row in charge_snapshot(conn, "acme", "sub_01").values()),
            key=repr,
        )
    lines = sorted(comparable(lines_json(db, "acme", "cust_01")), key=repr)  # charge lines have no identity to order
    row = stored(db, "acme")
    return lines, charge_rows, (row.has_billables, row.next_sync_after)


def afresh(db: Engine, view: SubscriptionView, mode: str) -> None:
    """The subscription stored anew, never synced (`store_view` keeps sync-state rows: they have no foreign key)."""
    store_view(db, view, settlement_mode=mode)
    delete_the_state_row(db, "acme")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(view=views(early_phase=True), mode=st.sampled_from(SETTLEMENT_MODES), data=st.data())
def test_syncing_with_reuse_ends_where_deciding_in_full_does(
    db: Engine, plans: list[SyncPlan], view: SubscriptionView, mode: str, data: st.DataObject
) -> None:
    """For random subscriptions, settlement modes and timelines: the copy synced with reuse and the copy synced
    with `reuse=False` have the same lines, charges and state after every step, and a reused step is one where
    the full decision wrote nothing."""
    times = data.draw(timelines(view))
    afresh(db, view, mode)
    with_reuse: list[tuple[bool, SyncResult, Any]] = []
    del plans[:]
    for at in times:
        result = sync_subscription(db, "acme", "sub_01", as_of=at, now=at)
        with_reuse.append((plans[-1].reused, result, outcome(db)))
        assert stored_token(db, "acme") == plans[-1].decision
        assert plans[-1].decision is None or plans[-1].is_empty
    event(f"{sum(reused for reused, _, _ in with_reuse)} of {len(times)} syncs reused")
    afresh(db, view, mode)
    for at, (reused, result, seen) in zip(times, with_reuse, strict=True):
        full = sync_subscription(db, "acme", "sub_01", as_of=at, now=at, reuse=False)
        assert not plans[-1].reused and stored_token(db, "acme") is None
        assert outcome(db) == seen, f"differs after the sync at {at}"
        assert [(p.op, p.unique_reference_id) for p in full.patches] == [
            (p.op, p.unique_reference_id) for p in result.patches
        ]
        assert full.state == result.state
        if reused:
            assert full.patches == ()


# --- the switch ---------------------------------------------------------------------------------------------------


def test_the_setting_turns_reuse_off_in_every_handler(db: Engine, plans: list[SyncPlan]) -> None:
    """`SUBSYNC_REUSE_DECISIONS=false` (docs/operations.md §1) reaches every handler that syncs: each decides in full
    and records nothing, and turning it back on starts recording again."""
    off = Settings(reuse_decisions=False)
    assert actor_settings(off).reuse_decisions is False and actor_settings(Settings()).reuse_decisions is True
    with_token(db)
    event = SubscriptionEvent.new("subscription.updated", namespace=NS, subscription_id=SUB, as_of=INSIDE)
    handled = handle_subscription_event(db, event, invoice_after_sync=False, now=INSIDE, reuse=off.reuse_decisions)
    assert handled.syncs[0].patches == () and not plans[-1].reused and stored_token(db) is None
    request = ReconcileRequest(namespace=NS, subscription_id=SUB)
    handle_reconcile_subscription(db, request, now=INSIDE, reuse=off.reuse_decisions)
    assert not plans[-1].reused and stored_token(db) is None
    handle_reconcile_subscription(db, request, now=INSIDE)  # on again: the head is recorded first
    handle_reconcile_subscription(db, request, now=INSIDE)
    assert not plans[-1].reused and stored_token(db) is not None
    handle_reconcile_subscription(db, request, now=INSIDE)
    assert plans[-1].reused


def test_only_a_sync_that_may_record_or_reuse_digests_its_read(db: Engine, plans: list[SyncPlan]) -> None:
    """docs/sync.md §8.6 "When the read is digested": a first sync and a sync after an edit read without a digest
    and without row versions (they pay for reuse only the two row versions of the lock statement); the sync after a
    write, with the same input head, digests."""
    texts: list[str] = []

    def after(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        texts.append(statement)

    def digested(fn: Callable[[], object]) -> bool:
        texts.clear()
        sa_event.listen(db, "after_cursor_execute", after)
        try:
            fn()
        finally:
            sa_event.remove(db, "after_cursor_execute", after)
        reads = [s for s in texts if "FULL JOIN phased" in s]  # the one read (worker.store.snapshot)
        assert len(reads) == 1
        # Row versions only in a read that is digested: by Postgres when it compares with a recorded digest
        # (`md5(`), by the worker when there is none to compare (worker.store.snapshot.rows_digest).
        return "ctid" in reads[0]

    apply(db, monthly(NS))
    assert not digested(lambda: sync(db, WRITES))  # the first sync: no input head recorded yet
    assert digested(lambda: sync(db, DECIDES)) and stored_token(db) is not None  # the same head: digested, recorded
    assert digested(lambda: sync(db, INSIDE)) and plans[-1].reused  # compared with the one recorded, and reused
    apply(db, document(NS, {"fee": [fee("it_fee", "11", START)], "api": [usage("it_api", "0.5", START)]}))
    assert not digested(lambda: sync(db, INSIDE))  # an edit: another subscription row version
