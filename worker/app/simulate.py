"""The one adapter through which `subsync preview` and `subscriptions apply --dry-run` reach the code that really
bills (docs/sync.md §10.2): the sync of docs/sync.md §8.1, the charge advance of docs/credits.md §3.10 and
the invoicing of docs/sync.md §9 run unchanged — the sync as load → decide → write, the same three functions as
`worker.app.sync.sync_subscription` —, on one connection whose transaction is always rolled back.

So a preview is the real decision by construction, and writes nothing: every row it wrote disappears with the
rollback, and the customer lock (a transaction-scoped advisory lock, docs/sync.md §6.1) is released with it.
The pure `decide` alone would serve one step; a timeline needs each step's writes seen by the next (the
persisted lines, charges, runs and credit ledgers), which is exactly what `write_plan` into an uncommitted
transaction gives. Another entry point (an in-memory "apply a plan to a snapshot") would change this module only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, Engine, func, select

from worker.app.charges import advance_in_transaction
from worker.app.invoicing import invoice_in_transaction
from worker.app.sync import SyncResult, decide_sync, result_of
from worker.config import DEFAULT_MAX_TARGET_LINES
from worker.domain.charges import StatusChange
from worker.store.db import run_transaction
from worker.store.snapshot import load_snapshot
from worker.store.tables import charges
from worker.store.write import write_plan

_T = TypeVar("_T")


def rolled_back(engine: Engine, work: Callable[[Connection], _T]) -> _T:
    """Run `work` in one transaction that is rolled back whatever happens: nothing it writes is kept."""
    return run_transaction(engine, work, rolled_back=True)


def sync_at(
    conn: Connection,
    namespace: str,
    subscription_id: str,
    at: datetime,
    *,
    dry_run: bool = False,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
) -> SyncResult:
    """The sync a worker runs at `at` (as of `at`, its clock at `at`): load → decide → write (docs/sync.md §8.1), the
    plan written into the caller's transaction (a dry run: load → decide only)."""
    snapshot = load_snapshot(conn, namespace, subscription_id, now=at)
    plan = decide_sync(snapshot, as_of=at, now=at, max_target_lines=max_target_lines)
    maybe_due = None if dry_run else write_plan(conn, plan)
    return result_of(plan, dry_run=dry_run, maybe_due=maybe_due)


def advance_at(conn: Connection, namespace: str, customer_id: str, at: datetime) -> list[StatusChange]:
    """The charge advance of docs/credits.md §3.10 at `at`."""
    return advance_in_transaction(conn, namespace, customer_id, at, at)


def invoice_at(conn: Connection, namespace: str, customer_id: str, at: datetime) -> int:
    """The after-sync invoicing of docs/sync.md §8.3 at `at` (not progressive); the number of invoices created."""
    return len(invoice_in_transaction(conn, namespace, customer_id, at, progressive=False, now=at).invoices)


def next_charge_due(conn: Connection, namespace: str, customer_id: str, after: datetime) -> datetime | None:
    """The earliest `advance_after` of the customer's live charges later than `after` (docs/credits.md §2.5)."""
    c = charges.c
    due: datetime | None = conn.execute(
        select(func.min(c.advance_after)).where(
            c.namespace == namespace,
            c.customer_id == customer_id,
            c.deleted_at.is_(None),
            c.advance_after > after,
        )
    ).scalar_one()
    return due
