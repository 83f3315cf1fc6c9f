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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from worker.domain.charges import (
    ChargeChanges,
    ChargeEngine,
    ChargePrintedPatch,
    route_targets,
)
from worker.domain.charges.diff import ChargeChange, charge_changes, patches_of
from worker.domain.charges.items import ChargeIndex, ChargeItem
from worker.domain.charges.routing import SettlementMode
from worker.domain.charges.targets import ChargeCandidate
from worker.domain.credit_allocation import AllocationRow
from worker.domain.errors import DomainError
from worker.domain.planner import Plan
from worker.domain.planner import plan as make_plan
from worker.domain.reuse import DecisionToken
from worker.domain.snapshot import Snapshot
from worker.domain.structure import stored_violations
from worker.domain.sync_state import NOTHING_TO_BILL, SyncState, after_sync, customer_deleted_before_start
from worker.domain.target import WantedLine
from worker.domain.updater import Changes, PrintedPatch, needs_gathering_invoice, resolve
from worker.domain.view import SubscriptionRecord, SubscriptionView, build_view

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


class ChargeItemsNeeded(Exception):
    """Raised by `decide` when a patch changes a charge of which the snapshot holds only the head (a sync reads the
    heads alone: worker.store.snapshot). The caller reads those charges in full (`identities`) and calls `resume`
    with them by identity: the decision goes on from where it stopped, with the same result as on a full
    snapshot. Pure: nothing was decided that depends on the missing rows."""

    def __init__(self, identities: tuple[str, ...], resume: Callable[[Mapping[str, ChargeItem]], SyncPlan]) -> None:
        super().__init__(f"{len(identities)} charge(s) to read in full: {', '.join(identities[:3])}")
        self.identities = identities
        self.resume = resume


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
    decision: DecisionToken | None = None
    """Recorded with the state when this plan writes nothing and may be reused (docs/sync.md §8.6)."""
    reused: bool = False
    """True when nothing was decided: the recorded decision was reused (docs/sync.md §8.6)."""
    input_head: str | None = None
    """The snapshot's `input_head`, recorded with the state whatever the plan (docs/sync.md §8.6)."""

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


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What `decide` and `touched_runs` share: the refusal checks, the targets and both diffs."""

    nothing: SyncPlan
    view: SubscriptionView | None
    customer_deleted_at: datetime | None
    patch_plan: Plan
    charge_changes: tuple[ChargeChange, ...]
    max_limit: datetime | None
    holds_until: datetime | None = None


def _prepare(snapshot: Snapshot, as_of: datetime, now: datetime, max_target_lines: int | None) -> _Prepared:
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
            stopped = replace(nothing, stopped="customer_deleted_before_start")
            return _Prepared(stopped, None, None, Plan((), ()), (), None)
        customer_deleted_at = snapshot.customer_deleted_at
    persisted = snapshot.persisted
    lines_target: tuple[WantedLine, ...] = ()
    charge_targets: tuple[ChargeCandidate, ...] = ()
    max_limit: datetime | None = None
    holds_until: datetime | None = None
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
        lines_target, max_limit, holds_until = target.lines, target.max_limit, target.holds_until
    patch_plan = make_plan(lines_target, persisted)
    changes = (
        charge_changes(charge_targets, ChargeIndex.of(snapshot.charges).heads)
        if snapshot.charges or charge_targets
        else ()
    )
    return _Prepared(nothing, view, customer_deleted_at, patch_plan, changes, max_limit, holds_until)


def touched_runs(
    snapshot: Snapshot, *, as_of: datetime, now: datetime, max_target_lines: int | None = None
) -> dict[str, frozenset[str]]:
    """By currency, the live runs on mutable invoices that this decision's charge patches touch: the only runs whose
    allocation rows `decide` needs in `Snapshot.ledgers` (docs/credits.md §3.3). Pure; raises as `decide` does."""
    out: dict[str, set[str]] = {}
    heads = ChargeIndex.of(snapshot.charges).heads
    for change in _prepare(snapshot, as_of, now, max_target_lines).charge_changes:
        head = heads.get(change.identity) if change.reason != "create" else None
        if head is None or head.run_id is None or head.run_immutable:
            continue
        out.setdefault(head.currency, set()).add(head.run_id)
    return {currency: frozenset(runs) for currency, runs in out.items()}


def decide(
    snapshot: Snapshot,
    *,
    as_of: datetime,
    now: datetime,
    ids: IdSource,
    max_target_lines: int | None = None,
) -> SyncPlan:
    """docs/sync.md §3-§7 and docs/credits.md §3.1-§3.7 on a snapshot: targets, the diff, how each patch lands, the
    charge engine's effects, the next sync state. Raises `SyncRefused` (see `Refusal`) or a `DomainError` (among
    them: a touched run whose currency has no ledger in the snapshot, see `touched_runs`); `ChargeItemsNeeded` when
    a patch changes a charge the snapshot holds by its head alone (a sync's read: the caller reads it and resumes)."""
    prepared = _prepare(snapshot, as_of, now, max_target_lines)
    if prepared.nothing.stopped is not None:
        return prepared.nothing
    missing = snapshot.charges.missing(c.identity for c in prepared.charge_changes if c.reason != "create")
    if missing:
        charges = snapshot.charges
        raise ChargeItemsNeeded(
            missing, lambda items: _decided(replace(snapshot, charges=charges.with_items(items)), prepared, now, ids)
        )
    return _decided(snapshot, prepared, now, ids)


def _decided(snapshot: Snapshot, prepared: _Prepared, now: datetime, ids: IdSource) -> SyncPlan:
    """`decide` once the targets and both diffs are made (`_prepare`) and every charge a patch changes is built."""
    nothing, view = prepared.nothing, prepared.view
    record, persisted = snapshot.subscription, snapshot.persisted
    patch_plan = prepared.patch_plan
    charge_patches = patches_of(prepared.charge_changes, snapshot.charges)

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
        customer_deleted_at=prepared.customer_deleted_at,
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
            customer_deleted_at=prepared.customer_deleted_at,
        )
        charges = engine.apply_plan(charge_patches)
        allocations = tuple((cur, tuple(ledger.new_rows)) for cur, ledger in ledgers.items() if ledger.new_rows)
    gathering = None
    if provisional and gathering_id is not None and _uses(gathering_id, lines, charges):
        gathering = NewGatheringInvoice(gathering_id, record.customer_id, record.currency)
    state = after_sync(prepared.max_limit, now) if view is not None and view.has_billables else NOTHING_TO_BILL
    plan = replace(
        nothing,
        state=state,
        patch_plan=patch_plan,
        gathering_invoice=gathering,
        lines=lines,
        charges=charges,
        allocations=allocations,
        touched_invoices=tuple(sorted(lines.touched_invoices | charges.touched_invoices)),
    )
    return replace(plan, decision=_reusable(snapshot, prepared, plan), input_head=snapshot.input_head)


def _reusable(snapshot: Snapshot, prepared: _Prepared, plan: SyncPlan) -> DecisionToken | None:
    """docs/sync.md §8.6: the token to record with the state when `plan` may be reused by a later sync, else None.
    Only a plan with no patch at all (so the stored sync issues, which only de-duplicate patches, did not matter),
    of a live subscription with no deletion time (the one input compared with `now`), whose state does not
    depend on `now` (a subscription with billables and no processed phase is due `now`) and is the state it read
    (the digest holds the state read, and a reuse writes back the state it reads)."""
    digest, until = snapshot.input_digest, prepared.holds_until
    if digest is None or until is None or prepared.view is None or snapshot.deleted_at is not None:
        return None
    if prepared.patch_plan.patches or prepared.charge_changes or not plan.is_empty:
        return None
    if plan.state.has_billables and prepared.max_limit is None:
        return None
    if snapshot.sync_state != plan.state:  # the digest holds the state read; a reuse writes the state it reads
        return None
    return DecisionToken(digest, plan.as_of, until)


def reused(
    record: SubscriptionRecord,
    settlement_mode: SettlementMode,
    state: SyncState,
    decision: DecisionToken,
    *,
    namespace: str,
    as_of: datetime,
    now: datetime,
    input_head: str,
) -> SyncPlan:
    """The plan of a sync whose inputs digest to `decision`'s and whose `as_of` it covers (docs/sync.md §8.6): the
    recorded decision again — nothing to write but the sync state, the same as recorded — and the token kept."""
    assert decision.covers(as_of)
    return SyncPlan(
        namespace,
        record.id,
        record.customer_id,
        record.currency,
        as_of,
        now,
        settlement_mode,
        False,
        state,
        decision=decision,
        reused=True,
        input_head=input_head,
    )


def _uses(invoice_id: str, lines: Changes, charges: ChargeChanges) -> bool:
    return (
        any(n.invoice_id == invoice_id for n in lines.new_lines)
        or any(w.move_to_invoice_id == invoice_id for w in lines.line_writes)
        or any(n.line.invoice_id == invoice_id for n in charges.new_lines.values())
    )
