"""The decision of one sync (docs/sync.md §8.1 "Anatomy of a sync", step *decide*): a pure function of the loaded
`Snapshot` and the time, returning the complete `SyncPlan` the store writes in one go.

Pure: no I/O, no clock (`as_of` and `now` are given), and every id comes from the injected `ids` source
(`ids(prefix)` → `il_…`, `chg_…`, `crun_…`, `cal_…`, `inv_…`): the same snapshot, times and id sequence give an
equal plan. What the plan holds, in the order the store writes it (docs/credits.md §3.7): the gathering invoice
to create (decided here, once, for lines and charge lines alike: docs/sync.md §6.2), the line and group writes
and validation issues (docs/sync.md §6.2-§6.5), the charge, run, charge-line and allocation-row writes
(docs/credits.md §3.7 steps 2-3), the invoices whose emptiness is checked afterwards (docs/sync.md §6.3), and the
next sync state (docs/sync.md §7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from worker.domain.charges import (
    ChargeChanges,
    ChargeEngine,
    ChargePrintedPatch,
    ChargeTarget,
    plan_charges,
    route_targets,
)
from worker.domain.charges.routing import SettlementMode
from worker.domain.credit_allocation import AllocationRow
from worker.domain.errors import DomainError
from worker.domain.planner import Plan
from worker.domain.planner import plan as make_plan
from worker.domain.snapshot import Snapshot
from worker.domain.structure import stored_violations
from worker.domain.sync_state import NOTHING_TO_BILL, SyncState, after_sync, customer_deleted_before_start
from worker.domain.target import TargetLine
from worker.domain.updater import Changes, PrintedPatch, needs_gathering_invoice, resolve
from worker.domain.view import SubscriptionView, build_view

#: `ids(prefix)` returns a new id with that prefix (`worker.infra.ids.new_id` in production).
IdSource = Callable[[str], str]

AnyPatch = PrintedPatch | ChargePrintedPatch


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a snapshot cannot be synced at all; the app raises the matching project error (docs/sync.md §8.1)."""

    kind: Literal["invalid_structure", "customer_not_found"]
    message: str


class SyncRefused(DomainError):
    """`decide` on a snapshot that cannot be synced (see `Refusal`)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class NewGatheringInvoice:
    """The customer's gathering invoice of the currency, to create before the lines that go on it (docs/sync.md §6.2)."""

    id: str
    customer_id: str
    currency: str

    @property
    def number(self) -> str:
        return f"GATHER-{self.currency}-{self.id[-8:]}"


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """Everything one sync decided. Frozen; `lines` and `charges` are the updater's and the charge engine's
    collections and must not be mutated once decided.

    `patch_plan`: the docs/sync.md §5 line and hierarchy patches. `lines`: their row writes and issues
    (docs/sync.md §6). `charges`: the charge engine's row writes (docs/credits.md §3.7). `allocations`: new
    credit allocation rows per currency, in ledger order. `touched_invoices`: mutable invoices that lost or
    changed lines, checked for emptiness after the writes (docs/sync.md §6.3). `stopped`: why nothing was planned
    (`customer_deleted_before_start`, docs/sync.md §8.1), else None."""

    namespace: str
    subscription_id: str
    customer_id: str
    currency: str
    as_of: datetime
    now: datetime
    settlement_mode: SettlementMode
    subscription_deleted: bool
    state: SyncState
    stopped: str | None = None
    patch_plan: Plan = field(default_factory=lambda: Plan((), ()))
    gathering_invoice: NewGatheringInvoice | None = None
    lines: Changes = field(default_factory=Changes)
    charges: ChargeChanges = field(default_factory=ChargeChanges)
    allocations: tuple[tuple[str, tuple[AllocationRow, ...]], ...] = ()
    touched_invoices: tuple[str, ...] = ()

    @property
    def patches(self) -> tuple[AnyPatch, ...]:
        """docs/sync.md §10: line and group patches, then charge patches in apply order (docs/credits.md §2.6)."""
        return (*self.lines.patches, *self.charges.patches)

    def printed(self, *, dry_run: bool) -> tuple[AnyPatch, ...]:
        """The patches as printed. A dry run writes nothing, so it names no row that does not exist yet: a new
        charge's `charge_id` and the gathering invoice still to create print null (docs/credits.md §2.6)."""
        if not dry_run:
            return self.patches
        new_invoice = self.gathering_invoice.id if self.gathering_invoice is not None else None
        lines = tuple(
            replace(p, invoice_id=None) if new_invoice is not None and p.invoice_id == new_invoice else p
            for p in self.lines.patches
        )
        charges = tuple(replace(p, charge_id=None) if p.op == "charge_create" else p for p in self.charges.patches)
        return (*lines, *charges)

    @property
    def is_empty(self) -> bool:
        """True when the write is the sync-state upsert alone (docs/sync.md §7)."""
        return (
            self.gathering_invoice is None
            and self.lines.is_empty
            and self.charges.is_empty
            and not any(rows for _, rows in self.allocations)
            and not self.touched_invoices
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.patches:
            out[p.op] = out.get(p.op, 0) + 1
        return out


def refusal(snapshot: Snapshot, view: SubscriptionView | None) -> Refusal | None:
    """docs/contract.md §3: a subscription stored before a structural rule existed, and breaking it, cannot be synced
    (never retried); docs/sync.md §8.1: a subscription with billables needs its customer."""
    if view is None:
        return None
    if view.has_billables and not snapshot.customer_exists:
        return Refusal(
            "customer_not_found",
            f"customer {snapshot.customer_id!r} of subscription {snapshot.subscription_id!r} not found",
        )
    return None


def _structure_refusal(snapshot: Snapshot) -> Refusal | None:
    assert snapshot.phases is not None
    problems = stored_violations(snapshot.subscription, snapshot.phases)
    if not problems:
        return None
    shown = "; ".join(str(p) for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return Refusal(
        "invalid_structure",
        f"subscription {snapshot.subscription_id!r} breaks the structural rules of docs/contract.md §3 and cannot be "
        f"synced; apply a corrected document: {shown}{more}",
    )


def decide(
    snapshot: Snapshot,
    *,
    as_of: datetime,
    now: datetime,
    ids: IdSource,
    max_target_lines: int | None = None,
) -> SyncPlan:
    """docs/sync.md §3-§7 and docs/credits.md §3.1-§3.7 on a snapshot: targets, the diff, how each patch lands, the
    charge engine's effects, the next sync state. Raises `SyncRefused` (see `Refusal`) or a `DomainError`."""
    record = snapshot.subscription
    deleted = snapshot.is_deleted(now)
    view = None
    if not deleted:
        if snapshot.phases is None:
            raise DomainError(f"subscription {record.id!r}: its phases were not loaded (deleted at load time)")
        if (structure := _structure_refusal(snapshot)) is not None:
            raise SyncRefused(structure)
        view = build_view(record, snapshot.phases)
    if (refused := refusal(snapshot, view)) is not None:
        raise SyncRefused(refused)
    nothing = SyncPlan(
        snapshot.namespace,
        record.id,
        record.customer_id,
        record.currency,
        as_of,
        now,
        snapshot.settlement_mode,
        deleted,
        NOTHING_TO_BILL,
    )
    customer_deleted_at = None
    if view is not None and view.has_billables:
        if customer_deleted_before_start(snapshot.customer_deleted_at, record.active_from):
            return replace(nothing, stopped="customer_deleted_before_start")
        customer_deleted_at = snapshot.customer_deleted_at

    persisted = snapshot.persisted
    lines_target: tuple[TargetLine, ...] = ()
    charge_targets: tuple[ChargeTarget, ...] = ()
    max_limit: datetime | None = None
    if view is not None:
        target, charge_targets = route_targets(
            view,
            as_of,
            snapshot.settlement_mode,
            persisted,
            snapshot.charges,
            customer_deleted_at=customer_deleted_at,
            max_lines=max_target_lines,
        )
        lines_target, max_limit = target.lines, target.max_limit
    patch_plan = make_plan(lines_target, persisted)
    charge_patches = plan_charges(charge_targets, snapshot.charges) if snapshot.charges or charge_targets else []

    # docs/sync.md §6.2: the live gathering invoice, or one to create; decided here once for lines and charge lines.
    gathering_id = snapshot.gathering_invoice_id
    provisional = gathering_id is None and (needs_gathering_invoice(patch_plan, persisted) or bool(charge_patches))
    if provisional:
        gathering_id = ids("inv")
    lines = resolve(
        patch_plan,
        persisted,
        gathering_invoice_id=gathering_id,
        new_id=lambda: ids("il"),
        customer_deleted_at=customer_deleted_at,
    )
    charges = ChargeChanges()
    allocations: tuple[tuple[str, tuple[AllocationRow, ...]], ...] = ()
    if charge_patches:
        ledgers = {cur: data.ledger(lambda: ids("cal")) for cur, data in sorted(snapshot.ledgers.items())}
        engine = ChargeEngine(
            customer_id=record.customer_id,
            now=now,
            new_id=ids,
            ledgers=ledgers,
            gathering_invoice_id=gathering_id,
            existing_issues=persisted.existing_issues,
            customer_deleted_at=customer_deleted_at,
        )
        charges = engine.apply_plan(charge_patches)
        allocations = tuple((cur, tuple(ledger.new_rows)) for cur, ledger in ledgers.items() if ledger.new_rows)
    gathering = None
    if provisional and gathering_id is not None and _uses(gathering_id, lines, charges):
        gathering = NewGatheringInvoice(gathering_id, record.customer_id, record.currency)
    state = after_sync(max_limit, now) if view is not None and view.has_billables else NOTHING_TO_BILL
    return replace(
        nothing,
        state=state,
        patch_plan=patch_plan,
        gathering_invoice=gathering,
        lines=lines,
        charges=charges,
        allocations=allocations,
        touched_invoices=tuple(sorted(lines.touched_invoices | charges.touched_invoices)),
    )


def _uses(invoice_id: str, lines: Changes, charges: ChargeChanges) -> bool:
    return (
        any(n.invoice_id == invoice_id for n in lines.new_lines)
        or any(w.move_to_invoice_id == invoice_id for w in lines.line_writes)
        or any(n.line.invoice_id == invoice_id for n in charges.new_lines.values())
    )
