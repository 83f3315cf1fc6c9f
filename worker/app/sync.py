"""The sync use case (docs/sync.md §8.1): load → decide → write, one transaction per subscription.

Used alike by the Dramatiq actors and the command line. `load_snapshot` (worker.store.snapshot) reads under the
customer lock, `decide` (worker.domain.decide) is the pure decision, `write_plan` (worker.store.write) writes it
in one go; a dry run is load → decide. See docs/sync.md §8.1 "Anatomy of a sync".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Engine

from worker.config import DEFAULT_MAX_TARGET_LINES
from worker.domain.charges import ChargePrintedPatch
from worker.domain.charges.routing import SettlementMode
from worker.domain.decide import ChargeItemsNeeded, Refusal, SyncPlan, SyncRefused, decide, reused
from worker.domain.snapshot import Snapshot
from worker.domain.sync_state import SyncState
from worker.domain.updater import PrintedPatch
from worker.domain.view import SubscriptionRecord
from worker.errors import InvalidSubscriptionError, NotFoundError, SubsyncError
from worker.infra.clock import utcnow
from worker.infra.gc_policy import collections_paused
from worker.infra.ids import new_id
from worker.infra.logging import get_logger
from worker.store.charges import load_charge_items
from worker.store.db import run_transaction
from worker.store.snapshot import Reused, load_for_sync, load_snapshot
from worker.store.write import write_plan

log = get_logger("worker.app.sync")

#: `as_of` of a sync: an instant, or a function of the subscription row the sync locked (docs/sync.md §8.2).
AsOf = datetime | Callable[[SubscriptionRecord], datetime] | None


@dataclass(frozen=True, slots=True)
class SyncResult:
    namespace: str
    subscription_id: str
    customer_id: str
    as_of: datetime
    dry_run: bool
    patches: tuple[PrintedPatch | ChargePrintedPatch, ...]
    """Line and group patches, then charge patches in apply order (docs/credits.md §2.6)."""
    state: SyncState
    subscription_deleted: bool = False
    settlement_mode: str = "invoice_only"  # docs/credits.md §2.1; the worker advances charges after a credit-mode sync
    # With `due_at`: False when the after-sync invoicing (docs/sync.md §8.3) certainly bills nothing; else None/True.
    maybe_due: bool | None = field(default=None, compare=False, repr=False)
    # True when the recorded decision was reused, nothing decided (docs/sync.md §8.6); the outcome is the same.
    reused: bool = field(default=False, compare=False)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.patches:
            out[p.op] = out.get(p.op, 0) + 1
        return out


def _error(refusal: Refusal) -> SubsyncError:
    """The project error of a refused sync: never retried (docs/contract.md §3) or not found (docs/sync.md §8.1)."""
    if refusal.kind == "invalid_structure":
        return InvalidSubscriptionError(refusal.message)
    return NotFoundError(refusal.message)


def decide_sync(
    snapshot: Snapshot,
    *,
    as_of: AsOf,
    now: datetime,
    max_target_lines: int | None = DEFAULT_MAX_TARGET_LINES,
    conn: Connection | None = None,
) -> SyncPlan:
    """`decide` with production ids, `as_of` resolved against the locked row, refusals raised as project errors.
    With `conn` (a sync's transaction), the charges a patch changes of which `snapshot` holds only the heads are
    read in full there, and the decision goes on (`ChargeItemsNeeded`)."""
    at = as_of(snapshot.subscription) if callable(as_of) else (as_of or now)
    try:
        return decide(snapshot, as_of=at, now=now, ids=new_id, max_target_lines=max_target_lines)
    except SyncRefused as refused:
        raise _error(refused.refusal) from None
    except ChargeItemsNeeded as needed:
        if conn is None:
            raise
        return needed.resume(load_charge_items(conn, snapshot.namespace, snapshot.charges, needed.identities))


def load_and_decide(
    conn: Connection,
    namespace: str,
    subscription_id: str,
    *,
    as_of: AsOf,
    now: datetime,
    max_target_lines: int | None = DEFAULT_MAX_TARGET_LINES,
    reuse: bool = False,
) -> SyncPlan:
    """load → decide in the caller's transaction (docs/sync.md §8.1 "Anatomy of a sync"). With `reuse` (a sync
    that writes), a recorded decision that still holds is reused instead (docs/sync.md §8.6)."""
    at = as_of if as_of is not None else now
    try:
        if reuse:
            loaded = load_for_sync(
                conn, namespace, subscription_id, now=now, as_of=at, max_target_lines=max_target_lines
            )
        else:
            loaded = load_snapshot(
                conn, namespace, subscription_id, now=now, as_of=at, max_target_lines=max_target_lines
            )
    except SyncRefused as refused:  # raised while finding the runs whose ledger rows to read
        raise _error(refused.refusal) from None
    if isinstance(loaded, Reused):
        head = loaded.loaded
        assert head.sync_state is not None  # a recorded decision is a column of the stored state
        mode = cast(SettlementMode, head.settlement_mode)
        return reused(
            head.record,
            mode,
            head.sync_state,
            loaded.decision,
            namespace=namespace,
            as_of=loaded.as_of,
            now=now,
            input_head=loaded.input_head,
        )
    return decide_sync(loaded, as_of=at, now=now, max_target_lines=max_target_lines, conn=conn)


def plan_sync(
    engine: Engine,
    namespace: str,
    subscription_id: str,
    *,
    as_of: AsOf = None,
    now: datetime | None = None,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
) -> SyncPlan:
    """load → decide in one transaction (the customer lock held while reading), nothing written: the plan a sync
    would write now (the dry run's, and the benchmark's floor's)."""
    now = now or utcnow()

    return run_transaction(
        engine,
        lambda conn: load_and_decide(
            conn, namespace, subscription_id, as_of=as_of, now=now, max_target_lines=max_target_lines
        ),
    )


def sync_subscription(
    engine: Engine,
    namespace: str,
    subscription_id: str,
    *,
    as_of: AsOf = None,
    dry_run: bool = False,
    now: datetime | None = None,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
    due_at: datetime | None = None,
    reuse: bool = True,
) -> SyncResult:
    """Sync one subscription in one transaction; any error rolls everything back.

    `reuse`: reuse a recorded decision that still holds (docs/sync.md §8.6); False decides in full whatever was
    recorded (the outcome is the same: tests/app/test_reuse.py compares them).
    `as_of`: default now; a function of the locked subscription row takes it from that row (docs/sync.md §8.2).
    `max_target_lines` bounds the work (docs/sync.md §3.11); callers pass `Settings.max_target_lines`.
    `due_at`: the instant the after-sync invoicing will use; the result's `maybe_due` then says whether it can
    bill anything (answered by the sync-state upsert, no extra round trip: docs/sync.md §8.3)."""
    now = now or utcnow()

    def work(conn: Connection) -> SyncResult:
        plan = load_and_decide(
            conn,
            namespace,
            subscription_id,
            as_of=as_of,
            now=now,
            max_target_lines=max_target_lines,
            reuse=reuse and not dry_run,
        )
        # The last thing this transaction does: its COMMIT goes with the write (worker.store.write.write_plan).
        maybe_due = None if dry_run else write_plan(conn, plan, due_at=due_at, commit=True)
        return result_of(plan, dry_run=dry_run, maybe_due=maybe_due)

    with collections_paused():  # the sync's objects live until its plan is written (worker.infra.gc_policy)
        result = run_transaction(engine, work)
    if log.enabled_for(logging.DEBUG):  # usually dropped: not built then (worker.infra.logging)
        log.debug(
            "sync.done",
            namespace=namespace,
            subscription_id=subscription_id,
            customer_id=result.customer_id,
            as_of=result.as_of.isoformat(),
            dry_run=dry_run,
            reused=result.reused,
            patches=result.counts(),
        )
    return result


def result_of(plan: SyncPlan, *, dry_run: bool, maybe_due: bool | None = None) -> SyncResult:
    if plan.stopped is not None:
        log.info(f"sync.{plan.stopped}", namespace=plan.namespace, subscription_id=plan.subscription_id)
    return SyncResult(
        plan.namespace,
        plan.subscription_id,
        plan.customer_id,
        plan.as_of,
        dry_run,
        plan.printed(dry_run=dry_run),
        plan.state,
        plan.subscription_deleted,
        plan.settlement_mode,
        maybe_due,
        plan.reused,
    )
