"""The sync use case (docs/sync.md §8.1): lock, load, plan, apply, record — one transaction per subscription.

Used alike by the Dramatiq actors and the command line. Everything it decides comes from the pure
core in `worker.domain`; this module only orders the I/O around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import Connection, Engine

from worker.app.charge_sync import ChargeStep, plan_charge_step, write_charge_step
from worker.config import DEFAULT_MAX_TARGET_LINES
from worker.domain.charges import ChargeChanges, ChargePrintedPatch, route_targets
from worker.domain.planner import plan as make_plan
from worker.domain.structure import stored_violations
from worker.domain.sync_state import NOTHING_TO_BILL, SyncState, after_sync, customer_deleted_before_start
from worker.domain.target import Target
from worker.domain.updater import Changes, PrintedPatch, needs_gathering_invoice, resolve
from worker.domain.view import PhaseRecord, SubscriptionRecord, build_view
from worker.errors import InvalidSubscriptionError, NotFoundError
from worker.infra.clock import utcnow
from worker.infra.ids import new_id
from worker.store.apply import apply_changes, find_gathering_invoice, get_or_create_gathering_invoice
from worker.store.charges import load_subscription_charges
from worker.store.db import run_transaction
from worker.store.persisted import load_persisted
from worker.store.sync_state import write_sync_state
from worker.store.view import load_and_lock_subscription, load_phases

log = structlog.get_logger("worker.app.sync")


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
    changes: Changes | None = field(default=None, compare=False, repr=False)
    # With `due_at`: False when the after-sync invoicing (docs/sync.md §8.3) certainly bills nothing; else None/True.
    maybe_due: bool | None = field(default=None, compare=False, repr=False)
    # The charge rows this sync writes (or would write): the benchmark's credits floor reads them (bench/credits.py).
    charge_changes: ChargeChanges | None = field(default=None, compare=False, repr=False)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.patches:
            out[p.op] = out.get(p.op, 0) + 1
        return out


def sync_subscription(
    engine: Engine,
    namespace: str,
    subscription_id: str,
    *,
    as_of: datetime | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    max_target_lines: int = DEFAULT_MAX_TARGET_LINES,
    due_at: datetime | None = None,
) -> SyncResult:
    """Sync one subscription in one transaction; any error rolls everything back.

    `max_target_lines` bounds the work (docs/sync.md §3.11); callers pass `Settings.max_target_lines`.
    `due_at`: the instant the after-sync invoicing will use; the result's `maybe_due` then says whether it can
    bill anything (answered by the sync-state upsert, no extra round trip: docs/sync.md §8.3)."""
    now = now or utcnow()
    as_of = as_of or now
    return run_transaction(
        engine,
        lambda conn: sync_in_transaction(
            conn,
            namespace,
            subscription_id,
            as_of=as_of,
            dry_run=dry_run,
            now=now,
            max_target_lines=max_target_lines,
            due_at=due_at,
        ),
    )


def check_structure(record: SubscriptionRecord, phases: list[PhaseRecord]) -> None:
    """A subscription stored before a structural rule of docs/contract.md §3 existed, and breaking it, cannot be
    synced: fail at once naming the rule (never retried) rather than on every period (docs/contract.md §3)."""
    problems = stored_violations(record, phases)
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InvalidSubscriptionError(
            f"subscription {record.id!r} breaks the structural rules of docs/contract.md §3 and cannot be synced; "
            f"apply a corrected document: {shown}{more}"
        )


def sync_in_transaction(
    conn: Connection,
    namespace: str,
    subscription_id: str,
    *,
    as_of: datetime,
    dry_run: bool,
    now: datetime,
    max_target_lines: int | None = None,
    due_at: datetime | None = None,
) -> SyncResult:
    loaded = load_and_lock_subscription(conn, namespace, subscription_id)  # with the lock of docs/sync.md §6.1
    record = loaded.record
    bound = log.bind(namespace=namespace, subscription_id=subscription_id, customer_id=record.customer_id)
    deleted = loaded.is_deleted(now)
    view = None
    if not deleted:
        phases = load_phases(conn, namespace, subscription_id, now)
        check_structure(record, phases)
        view = build_view(record, phases)

    def result(
        patches: tuple[PrintedPatch | ChargePrintedPatch, ...],
        state: SyncState,
        changes: Changes | None = None,
        maybe_due: bool | None = None,
        charge_changes: ChargeChanges | None = None,
    ) -> SyncResult:
        return SyncResult(
            namespace,
            subscription_id,
            record.customer_id,
            as_of,
            dry_run,
            patches,
            state,
            deleted,
            loaded.settlement_mode,
            changes,
            maybe_due,
            charge_changes,
        )

    customer_deleted_at = None
    if view is not None and view.has_billables:
        if not loaded.customer_exists:
            raise NotFoundError(f"customer {record.customer_id!r} of subscription {subscription_id!r} not found")
        if customer_deleted_before_start(loaded.customer_deleted_at, record.active_from):
            bound.info("sync.customer_deleted_before_start")
            if not dry_run:
                write_sync_state(conn, namespace, subscription_id, NOTHING_TO_BILL, now)
            return result((), NOTHING_TO_BILL)
        customer_deleted_at = loaded.customer_deleted_at

    persisted = load_persisted(conn, namespace, subscription_id)
    charge_items = load_subscription_charges(conn, namespace, subscription_id)  # docs/credits.md §3.3
    target, charge_targets = (
        route_targets(
            view,
            as_of,
            loaded.settlement_mode,  # type: ignore[arg-type]  # the column's check: one of SETTLEMENT_MODES
            persisted,
            charge_items,
            customer_deleted_at=customer_deleted_at,
            max_lines=max_target_lines,
        )
        if view is not None
        else (Target((), None), ())
    )
    plan = make_plan(target.lines, persisted)
    gathering_id = None
    if needs_gathering_invoice(plan, persisted):
        if dry_run:
            gathering_id = find_gathering_invoice(conn, namespace, record.customer_id, record.currency)
        else:
            gathering_id = get_or_create_gathering_invoice(conn, namespace, record.customer_id, record.currency, now)
    changes = resolve(
        plan,
        persisted,
        gathering_invoice_id=gathering_id,
        new_id=lambda: new_id("il"),
        customer_deleted_at=customer_deleted_at,
    )
    charge_step = (
        plan_charge_step(
            conn,
            namespace,
            record.customer_id,
            charge_items,
            charge_targets,
            now=now,
            gathering_invoice_id=gathering_id,
            customer_deleted_at=customer_deleted_at,
        )
        if charge_items or charge_targets
        else ChargeStep()
    )
    if view is None or not view.has_billables:
        state = NOTHING_TO_BILL
    else:
        state = after_sync(target.max_limit, now)
    maybe_due = None
    if not dry_run:
        apply_changes(conn, namespace, changes, now, delete_emptied=False)  # docs/credits.md §3.7 step 1
        write_charge_step(  # docs/credits.md §3.7 steps 2-4
            conn,
            namespace,
            record.customer_id,
            record.currency,
            charge_step,
            now,
            gathering_invoice_id=gathering_id,
            line_touched_invoices=changes.touched_invoices,
        )
        # The sync's last statement: it sees every line this sync wrote, charge lines too (docs/sync.md §8.3).
        due = None if due_at is None else (record.customer_id, due_at)
        maybe_due = write_sync_state(conn, namespace, subscription_id, state, now, due=due)
    out = result(
        (*changes.patches, *charge_step.printed(dry_run=dry_run)), state, changes, maybe_due, charge_step.changes
    )
    bound.debug("sync.done", as_of=as_of.isoformat(), dry_run=dry_run, patches=out.counts())
    return out
