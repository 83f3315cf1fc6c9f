"""The invoice updater of docs/sync.md §6.2-§6.5: how each planned patch lands, by the kind of invoice.

Gathering and draft invoices take the writes; immutable invoices get validation issues instead
(de-duplicated against the existing ones). The result is a flat list of row writes for the store, plus
the effective patches in plan order for printing (docs/sync.md §10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from worker.domain.errors import PlanningError
from worker.domain.money import format_decimal
from worker.domain.persisted import IssueKey, PersistedLine, PersistedState
from worker.domain.planner import CreateLine, DeleteGroup, DeleteLine, Plan, UpdateGroup, UpdateLine
from worker.domain.prices import FlatPrice, Price
from worker.domain.records import value
from worker.domain.target import TargetLine
from worker.domain.timeutil import Period, format_instant

COMPONENT = "subscription-sync"
CODE = "immutable_invoice_handling_not_supported"

Op = Literal["line_create", "line_update", "line_delete", "group_update", "group_delete", "validation_issue"]


@value
class NewLine:
    id: str
    invoice_id: str | None
    target: TargetLine


@value
class LineWrite:
    """An update of one line row: the new service period and `invoice_at`, the row's truncated billing
    period, a new price when it changed, whether the row comes back from deletion, and the gathering
    invoice it moves to when its own gathering invoice was deleted meanwhile (else None)."""

    line_id: str
    service_period: Period
    invoice_at: datetime
    billing_period: Period
    price: Price | None
    resurrect: bool
    move_to_invoice_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewIssue:
    invoice_id: str
    severity: Literal["warning", "critical"]
    message: str
    path: str
    code: str = CODE
    component: str = COMPONENT

    @property
    def key(self) -> IssueKey:
        return IssueKey(self.invoice_id, self.path, self.component, self.code, self.message)


@value
class PrintedPatch:
    op: Op
    unique_reference_id: str
    reason: str
    service_period: Period
    line_id: str | None = None
    invoice_id: str | None = None
    group_id: str | None = None


@dataclass(slots=True)
class Changes:
    new_lines: list[NewLine] = field(default_factory=list)
    line_writes: list[LineWrite] = field(default_factory=list)
    line_deletes: list[str] = field(default_factory=list)
    issues: list[NewIssue] = field(default_factory=list)
    group_deletes: list[str] = field(default_factory=list)
    group_updates: list[tuple[str, Period]] = field(default_factory=list)
    touched_invoices: set[str] = field(default_factory=set)
    """Mutable invoices that lost or changed lines: emptied ones are deleted after the writes."""
    patches: list[PrintedPatch] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (
            self.new_lines
            or self.line_writes
            or self.line_deletes
            or self.issues
            or self.group_deletes
            or self.group_updates
        )


def resolve(
    plan: Plan,
    persisted: PersistedState,
    *,
    gathering_invoice_id: str | None,
    new_id: Callable[[], str],
    customer_deleted_at: datetime | None = None,
) -> Changes:
    """Turn the plan into row writes and validation issues, and the printed patch list."""
    return _Resolver(persisted, gathering_invoice_id, new_id, customer_deleted_at).run(plan)


class _Resolver:
    def __init__(
        self,
        persisted: PersistedState,
        gathering_invoice_id: str | None,
        new_id: Callable[[], str],
        customer_deleted_at: datetime | None,
    ) -> None:
        self.persisted = persisted
        self.gathering_invoice_id = gathering_invoice_id
        self.new_id = new_id
        self.customer_deleted_at = customer_deleted_at
        self.changes = Changes()
        self.deleted_now: set[str] = set()
        self.seen_issues: set[IssueKey] = set(persisted.existing_issues)

    def run(self, plan: Plan) -> Changes:
        for patch in plan.patches:
            if isinstance(patch, CreateLine):
                self._create(patch)
            elif isinstance(patch, UpdateLine):
                self._update(patch)
            elif isinstance(patch, DeleteLine):
                self._delete(patch)
            elif isinstance(patch, DeleteGroup):
                self._delete_group(patch)
            else:
                self._update_group(patch)
        return self.changes

    # -- creates (docs/sync.md §6.2) ------------------------------------------------------------------
    def _create(self, patch: CreateLine) -> None:
        target = patch.target
        end = target.service_period.end
        if self.customer_deleted_at is not None and end > self.customer_deleted_at:
            raise PlanningError(
                f"{target.identity}: cannot create a line ending {format_instant(end)}, after the customer was "
                f"deleted ({format_instant(self.customer_deleted_at)})"
            )
        if not target.is_flat and not target.feature_key:
            raise PlanningError(f"{target.identity}: a usage-based line needs the rate card's feature_key")
        line_id = self.new_id()
        self.changes.new_lines.append(NewLine(line_id, self.gathering_invoice_id, target))
        self.changes.patches.append(
            PrintedPatch(
                "line_create",
                target.identity,
                patch.reason,
                target.service_period,
                line_id,
                self.gathering_invoice_id,
            )
        )

    # -- updates and deletes by invoice kind (docs/sync.md §6.3, §6.4) -------------------------------
    def _update(self, patch: UpdateLine) -> None:
        line = patch.line
        invoice = self.persisted.invoice_of(line)
        if invoice.immutable:
            if line.deleted:
                raise PlanningError(
                    f"{patch.identity}: line {line.id} is not among the lines of immutable invoice {invoice.id}, "
                    "cannot update"
                )
            message = _update_issue_message(patch)
            if message is not None:
                self._issue(patch, NewIssue(invoice.id, "warning", message, f"lines/{line.id}"), patch.service_period)
            return
        move_to = None
        if moves_to_live_gathering_invoice(patch, self.persisted):
            move_to = self.gathering_invoice_id
            if move_to is None:
                raise PlanningError(f"{patch.identity}: line {line.id} needs the live gathering invoice")
        self.changes.line_writes.append(
            LineWrite(
                line.id,
                patch.service_period,
                patch.invoice_at,
                line.billing_period,
                patch.price,
                patch.resurrects,
                move_to,
            )
        )
        self.changes.touched_invoices.add(invoice.id)
        self.changes.patches.append(
            PrintedPatch(
                "line_update",
                patch.identity,
                patch.reason,
                patch.service_period,
                line.id,
                move_to or invoice.id,
                patch.group_id,
            )
        )

    def _delete(self, patch: DeleteLine) -> None:
        line = patch.line
        invoice = self.persisted.invoice_of(line)
        if invoice.immutable:
            if line.deleted:
                issue = NewIssue(invoice.id, "critical", "line not found in the invoice, cannot update", "lines/nil")
            else:
                issue = NewIssue(
                    invoice.id,
                    "warning",
                    "line should be deleted, but the invoice is immutable",
                    f"lines/{line.id}",
                )
            self._issue(patch, issue, line.service_period)
            return
        if line.deleted:
            return  # already gone: nothing to write
        self.changes.line_deletes.append(line.id)
        self.deleted_now.add(line.id)
        self.changes.touched_invoices.add(invoice.id)
        self.changes.patches.append(
            PrintedPatch(
                "line_delete",
                patch.identity,
                patch.reason,
                line.service_period,
                line.id,
                invoice.id,
                patch.group_id,
            )
        )

    def _issue(self, patch: UpdateLine | DeleteLine, issue: NewIssue, period: Period) -> None:
        if issue.key in self.seen_issues:
            return
        self.seen_issues.add(issue.key)
        self.changes.issues.append(issue)
        self.changes.patches.append(
            PrintedPatch(
                "validation_issue",
                patch.identity,
                patch.reason,
                period,
                patch.line.id,
                issue.invoice_id,
                patch.group_id,
            )
        )

    # -- split line groups (docs/sync.md §6.5) --------------------------------------------------------
    def _delete_group(self, patch: DeleteGroup) -> None:
        # (project) a child that could not be deleted (immutable invoice) keeps its group alive.
        if not all(c.deleted or c.id in self.deleted_now for c in patch.group.children):
            return
        self.changes.group_deletes.append(patch.group.id)
        self.changes.patches.append(
            PrintedPatch(
                "group_delete",
                patch.identity,
                patch.reason,
                patch.group.service_period,
                group_id=patch.group.id,
            )
        )

    def _update_group(self, patch: UpdateGroup) -> None:
        self.changes.group_updates.append((patch.group.id, patch.service_period))
        self.changes.patches.append(
            PrintedPatch("group_update", patch.identity, patch.reason, patch.service_period, group_id=patch.group.id)
        )


def moves_to_live_gathering_invoice(patch: UpdateLine, persisted: PersistedState) -> bool:
    """(project) A line that is live after the update but sits on a soft-deleted gathering invoice —
    a group child resurrected after its emptied gathering invoice was deleted (docs/sync.md §5.4, §6.3) — moves
    to the customer's live gathering invoice; on the deleted one it would never be invoiced."""
    invoice = persisted.invoice_of(patch.line)
    live_after = patch.resurrects or not patch.line.deleted
    return invoice.is_gathering and invoice.deleted and live_after


def needs_gathering_invoice(plan: Plan, persisted: PersistedState) -> bool:
    """Whether resolving `plan` needs the customer's live gathering invoice: for new lines, or for lines
    moving off a deleted gathering invoice."""
    return bool(plan.creates) or any(
        isinstance(p, UpdateLine) and moves_to_live_gathering_invoice(p, persisted) for p in plan.patches
    )


def _update_issue_message(patch: UpdateLine) -> str | None:
    """The issue an update would raise on an immutable invoice, if the change is visible."""
    line: PersistedLine = patch.line
    period_changed = patch.service_period.truncated() != line.service_period.truncated()
    if isinstance(line.price, FlatPrice):
        if patch.price is not None and isinstance(patch.price, FlatPrice) and patch.price.amount != line.price.amount:
            return (
                "flat fee line's per unit amount cannot be changed on immutable invoice "
                f"(new per unit amount: {format_decimal(patch.price.amount)})"
            )
        if period_changed:
            return "flat fee line's service period cannot be changed on immutable invoice"
        return None
    if period_changed:
        start, end = patch.service_period.start, patch.service_period.end
        return (
            "usage based line's service period cannot be changed on immutable invoice "
            f"(new period: {format_instant(start)} - {format_instant(end)})"
        )
    return None
