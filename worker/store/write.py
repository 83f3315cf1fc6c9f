"""docs/sync.md §8.1 "Anatomy of a sync", step *write*: a decided `SyncPlan` written in as few round trips as
psycopg allows.

Every statement is one per kind of row whatever the number of rows (worker.store.apply, worker.store.charge_write),
and all of them go to the server in one psycopg pipeline: one round trip for the whole plan, the sync-state upsert
included. The upsert comes last (docs/sync.md §8.3: it sees every row the sync wrote); its `maybe_due` answer is
read once the pipeline has synchronised. A steady-state plan (`SyncPlan.is_empty`) writes the upsert alone. Runs in
the caller's transaction, under the customer lock the load took; a sync ends that transaction in the same pipeline
(`write_plan(..., commit=True)`: docs/performance.md "COMMIT in the write's round trip, and small cuts per row")."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg
from sqlalchemy import Connection, exc, text

from worker.domain.credit_allocation import AllocationRow
from worker.domain.decide import NewGatheringInvoice, SyncPlan
from worker.store.apply import GatheringInvoiceConflict, apply_changes, delete_emptied_invoices
from worker.store.charge_write import write_charge_changes
from worker.store.db import as_dbapi_error, commit_in_pipeline
from worker.store.sync_state import send_sync_state, write_sync_state

_GATHERING_INDEX = "uq_invoices_one_gathering_per_currency"

# The customer lock is held, so no other sync creates it meanwhile; a writer without the lock makes this fail
# on `uq_invoices_one_gathering_per_currency`, raised as GatheringInvoiceConflict (retried, docs/sync.md §6.1).
_INSERT_GATHERING = text(
    """
    INSERT INTO invoices (namespace, id, customer_id, currency, type, status, immutable, number, created_at, updated_at)
    VALUES (:namespace, :id, :customer_id, :currency, 'gathering', 'gathering', false, :number, :now, :now)
    """
)


@dataclass(frozen=True, slots=True)
class _Allocations:
    """The new allocation rows of one currency, as `write_charge_changes` takes them."""

    currency: str
    new_rows: Sequence[AllocationRow]


@contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """Statements executed through `conn` inside this block are sent without waiting for their results and
    synchronised once at its end (psycopg pipeline mode): one round trip. Only statements whose results are not
    read may run inside. A server error surfaces at the end, raised as SQLAlchemy's DBAPIError like any other."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.pipeline():
            yield
    except psycopg.Error as error:
        raise as_dbapi_error(conn, error) from error


def _insert_gathering(conn: Connection, namespace: str, invoice: NewGatheringInvoice, now: datetime) -> None:
    conn.execute(
        _INSERT_GATHERING,
        {
            "namespace": namespace,
            "id": invoice.id,
            "customer_id": invoice.customer_id,
            "currency": invoice.currency,
            "number": invoice.number,
            "now": now,
        },
    )


def write_plan(
    conn: Connection, plan: SyncPlan, *, due_at: datetime | None = None, commit: bool = False
) -> bool | None:
    """Write `plan` in the docs/credits.md §3.7 order: the gathering invoice, line patches (docs/sync.md §6.2-§6.5),
    charge writes and allocation rows, the emptied-invoice rules once for lines and charges (docs/sync.md §6.3),
    then the sync state (docs/sync.md §7). With `due_at`, return whether the after-sync invoicing at that instant
    can bill anything (docs/sync.md §8.3), else None.

    `commit`: the write ends the caller's transaction: COMMIT goes in the same pipeline, after the upsert, instead
    of a round trip of its own when the caller's transaction block ends (that block then finds nothing to commit).
    The caller runs nothing on `conn` afterwards. A failed statement makes the server skip the COMMIT, so the
    transaction still rolls back whole."""
    namespace, now = plan.namespace, plan.now
    # A sync stopped before planning (docs/sync.md §8.1) leaves the after-sync invoicing undecided, as it always has.
    due = None if due_at is None or plan.stopped is not None else (plan.customer_id, due_at)
    if plan.is_empty and not commit:
        return write_sync_state(
            conn,
            namespace,
            plan.subscription_id,
            plan.state,
            now,
            due=due,
            decision=plan.decision,
            head=plan.input_head,
        )
    answer: Callable[[], bool] | None = None  # the `maybe_due` of the pipelined upsert, read after the sync
    try:
        with pipelined(conn):
            if not plan.is_empty:
                _send_changes(conn, plan)
            state = (conn, namespace, plan.subscription_id, plan.state, now)
            if due is None:
                write_sync_state(*state, decision=plan.decision, head=plan.input_head)
            else:
                answer = send_sync_state(*state, due=due, decision=plan.decision, head=plan.input_head)
            if commit:
                commit_in_pipeline(conn)
    except exc.IntegrityError as error:
        if getattr(getattr(error.orig, "diag", None), "constraint_name", None) == _GATHERING_INDEX:
            raise GatheringInvoiceConflict(
                f"gathering invoice of customer {plan.customer_id!r} ({plan.currency}) was created concurrently; retry"
            ) from error
        raise
    return None if answer is None else answer()


def _send_changes(conn: Connection, plan: SyncPlan) -> None:
    """The plan's row writes, in the docs/credits.md §3.7 order, queued in `write_plan`'s pipeline."""
    namespace, now = plan.namespace, plan.now
    if plan.gathering_invoice is not None:
        _insert_gathering(conn, namespace, plan.gathering_invoice, now)
    apply_changes(conn, namespace, plan.lines, now, delete_emptied=False)  # docs/credits.md §3.7 step 1
    allocations = [_Allocations(currency, rows) for currency, rows in plan.allocations]
    if not plan.charges.is_empty or allocations:  # docs/credits.md §3.7 steps 2-3
        write_charge_changes(conn, namespace, plan.customer_id, plan.charges, allocations, now, delete_emptied=False)
    if plan.touched_invoices:  # docs/credits.md §3.7 step 4
        delete_emptied_invoices(conn, namespace, plan.touched_invoices, now)
