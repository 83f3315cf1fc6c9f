"""Planning of docs/sync.md §5: diff the target against the persisted state by identity into patches.

The planner says *what* should change (create, delete, shrink, extend, prorate), routed by the shape of
the persisted item: a plain line (§5.3) or a split line hierarchy (§5.4). How each patch lands on an
invoice of a given kind is the invoice updater's business (`worker.domain.updater`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from worker.domain.errors import DuplicateIdentityError, PlanningError
from worker.domain.persisted import (
    IGNORE,
    HierarchyItem,
    LineItem,
    PersistedGroup,
    PersistedLine,
    PersistedState,
)
from worker.domain.prices import FlatPrice, Price
from worker.domain.records import value
from worker.domain.target import TargetLine, WantedLine
from worker.domain.timeutil import Period

Reason = Literal["create", "delete", "shrink", "extend", "prorate"]


@value
class CreateLine:
    identity: str
    target: TargetLine
    reason: Reason = "create"


@value
class UpdateLine:
    """New period / `invoice_at` / price for an existing line (a plain line or a group child)."""

    identity: str
    line: PersistedLine
    service_period: Period
    invoice_at: datetime
    price: Price | None
    reason: Reason
    group_id: str | None = None

    @property
    def resurrects(self) -> bool:
        """docs/sync.md §5.4 (project): a deleted subscription-managed child that is updated comes back."""
        return self.line.deleted and self.line.is_subscription_managed


@value
class DeleteLine:
    identity: str
    line: PersistedLine
    reason: Reason
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateGroup:
    identity: str
    group: PersistedGroup
    service_period: Period
    reason: Reason


@dataclass(frozen=True, slots=True)
class DeleteGroup:
    identity: str
    group: PersistedGroup
    reason: Reason = "delete"


Patch = CreateLine | UpdateLine | DeleteLine | UpdateGroup | DeleteGroup


@dataclass(frozen=True, slots=True)
class Plan:
    """Patches in plan order (docs/sync.md §5.2): line-backed items first, then hierarchy-backed items."""

    line_patches: tuple[Patch, ...]
    hierarchy_patches: tuple[Patch, ...]

    @property
    def patches(self) -> tuple[Patch, ...]:
        return self.line_patches + self.hierarchy_patches

    @property
    def creates(self) -> tuple[CreateLine, ...]:
        return tuple(p for p in self.line_patches if isinstance(p, CreateLine))

    @property
    def is_empty(self) -> bool:
        return not self.line_patches and not self.hierarchy_patches


def plan(targets: Sequence[WantedLine], persisted: PersistedState) -> Plan:
    """docs/sync.md §5.1-§5.2. A `LineCandidate` is built into its `TargetLine` only for a create."""
    by_identity: dict[str, WantedLine] = {}
    for t in targets:
        if t.identity in by_identity:
            raise DuplicateIdentityError(f"two target lines have the unique reference id {t.identity!r}")
        by_identity[t.identity] = t
    line_patches: list[Patch] = []
    hierarchy_patches: list[Patch] = []
    removed = sorted(i for i in persisted.items if i not in by_identity)
    for identity in removed:
        item = persisted.items[identity]
        if isinstance(item, LineItem):
            line_patches += _delete_line_item(identity, item)
        else:
            hierarchy_patches += _delete_hierarchy(identity, item)
    for identity in sorted(by_identity):
        target = by_identity[identity]
        existing = persisted.get(identity)
        if existing is None:
            line_patches.append(CreateLine(identity, target.target()))
        elif isinstance(existing, LineItem):
            line_patches += _diff_line(target, existing.line, persisted)
        else:
            hierarchy_patches += _diff_hierarchy(target, existing, persisted)
    return Plan(tuple(line_patches), tuple(hierarchy_patches))


# --- line-backed items (docs/sync.md §5.3) -------------------------------------------------------------


def _skip(line: PersistedLine) -> bool:
    return line.has_annotation(IGNORE) or not line.is_subscription_managed


def _delete_line_item(identity: str, item: LineItem) -> list[Patch]:
    line = item.line
    if line.has_annotation(IGNORE) or line.deleted:
        return []
    return [DeleteLine(identity, line, "delete")]


def _diff_line(target: WantedLine, line: PersistedLine, persisted: PersistedState) -> list[Patch]:
    # Whether the line is on a gathering invoice is looked up only for a patch (most lines have none).
    if (
        isinstance(target.price, FlatPrice)
        and isinstance(line.price, FlatPrice)
        and (line.price.amount != target.price.amount or line.service_period != target.service_period)
    ):
        return _prorate(target, line, persisted.invoice_of(line).is_gathering, line.price, target.price)
    if target.service_period.end < line.service_period.end:
        return _usage_update(target, line, persisted.invoice_of(line).is_gathering, "shrink")
    if target.service_period.end > line.service_period.end:
        return _usage_update(target, line, persisted.invoice_of(line).is_gathering, "extend")
    return []


def _prorate(
    target: WantedLine, line: PersistedLine, gathering: bool, current: FlatPrice, wanted: FlatPrice
) -> list[Patch]:
    """Flat lines: period and amount move together; `invoice_at` only on a gathering invoice."""
    if _skip(line):
        return []
    period, invoice_at, price = line.service_period, line.invoice_at, None
    if line.service_period != target.service_period:
        period = target.service_period
        if gathering:
            invoice_at = target.invoice_at
    if current.amount != wanted.amount:
        price = current.with_amount(wanted.amount)
    return [UpdateLine(target.identity, line, period, invoice_at, price, "prorate")]


def _usage_update(target: WantedLine, line: PersistedLine, gathering: bool, reason: Reason) -> list[Patch]:
    """Shrink / extend: the whole service period moves; an emptied line is deleted."""
    if _skip(line):
        return []
    if line.price is not None and line.price.is_flat:
        raise PlanningError(f"{target.identity}: a flat fee line cannot take a usage update ({reason})")
    if target.service_period.truncated().is_empty:
        return [DeleteLine(target.identity, line, reason)]
    invoice_at = target.invoice_at if gathering else line.invoice_at
    return [UpdateLine(target.identity, line, target.service_period, invoice_at, None, reason)]


# --- hierarchy-backed items (docs/sync.md §5.4) --------------------------------------------------------


def _delete_hierarchy(identity: str, item: HierarchyItem) -> list[Patch]:
    if item.is_ignored():
        return []
    patches: list[Patch] = [DeleteLine(identity, c, "delete", item.group.id) for c in item.children if not c.deleted]
    patches.append(DeleteGroup(identity, item.group))
    return patches


def _diff_hierarchy(target: WantedLine, item: HierarchyItem, persisted: PersistedState) -> list[Patch]:
    if target.is_flat:
        raise PlanningError(f"{target.identity}: a flat fee target cannot be applied to a split line group")
    group = item.group
    new_end = target.service_period.end
    if new_end == group.service_period.end or item.is_ignored():
        return []
    patches: list[Patch] = []
    if new_end < group.service_period.end:
        reason: Reason = "shrink"
        for child in item.children:
            patches += _shrink_child(target, group, child, persisted.invoice_of(child).is_gathering)
    else:
        reason = "extend"
        last = item.last_child()
        if last is not None:
            period = Period(last.service_period.start, new_end)
            gathering = persisted.invoice_of(last).is_gathering
            invoice_at = target.invoice_at if gathering else last.invoice_at
            patches.append(UpdateLine(target.identity, last, period, invoice_at, None, reason, group.id))
    new_period = Period(group.service_period.start, new_end)
    patches.append(UpdateGroup(target.identity, group, new_period, reason))
    return patches


def _shrink_child(target: WantedLine, group: PersistedGroup, child: PersistedLine, gathering: bool) -> list[Patch]:
    new_end = target.service_period.end
    start, end = child.service_period.start, child.service_period.end
    if end <= new_end:
        return []  # ends before the new end, or exactly at it: left as it is
    if start > new_end:
        return [DeleteLine(target.identity, child, "shrink", group.id)]
    period = Period(start, new_end)
    if period.truncated().is_empty:
        return [DeleteLine(target.identity, child, "shrink", group.id)]
    invoice_at = target.invoice_at if gathering else child.invoice_at
    return [UpdateLine(target.identity, child, period, invoice_at, None, "shrink", group.id)]
