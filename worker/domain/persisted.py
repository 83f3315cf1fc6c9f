"""Persisted state of docs/sync.md §4: what the billing tables hold for one subscription, normalised.

A plain line with a unique reference id is a *line item*; a split line group with one is a *hierarchy
item*. Both answer the small `PersistedItem` interface the target builder and the planner use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from worker.domain.errors import DuplicateIdentityError
from worker.domain.prices import Price
from worker.domain.records import value
from worker.domain.timeutil import Period, trunc

IGNORE = "billing.subscription.sync.ignore"
FORCE_CONTINUOUS = "billing.subscription.sync.force-continuous-lines"

ManagedBy = Literal["subscription", "manual", "system"]


def annotation_true(annotations: Mapping[str, Any] | None, key: str) -> bool:
    """Annotation values count only when they are JSON `true` (docs/sync.md §3.7)."""
    return annotations is not None and annotations.get(key) is True


@value
class Invoice:
    id: str
    type: Literal["gathering", "standard"]
    status: str
    immutable: bool
    deleted: bool

    @property
    def is_gathering(self) -> bool:
        return self.type == "gathering"


@dataclass(frozen=True, slots=True)
class IssueKey:
    """What makes two validation issues on one invoice the same (docs/sync.md §6.4 de-duplication)."""

    invoice_id: str
    path: str
    component: str
    code: str
    message: str


@value
class PersistedLine:
    id: str
    invoice_id: str
    managed_by: str
    unique_reference_id: str | None
    split_line_group_id: str | None
    annotations: Mapping[str, Any]
    service_period: Period
    billing_period: Period
    invoice_at: datetime
    price: Price | None
    deleted: bool

    @property
    def is_subscription_managed(self) -> bool:
        return self.managed_by == "subscription"

    def has_annotation(self, key: str) -> bool:
        return annotation_true(self.annotations, key)


@dataclass(frozen=True, slots=True)
class PersistedGroup:
    id: str
    unique_reference_id: str | None
    service_period: Period
    children: tuple[PersistedLine, ...]


class PersistedItem(Protocol):
    """One persisted item with a sync identity: a line or a split line group."""

    @property
    def identity(self) -> str: ...

    @property
    def service_period(self) -> Period: ...

    def continuity_source(self) -> PersistedLine | None:
        """The line whose management and annotations stand for the item (docs/sync.md §3.7 rule 2)."""
        ...


@value
class LineItem:
    line: PersistedLine

    @property
    def identity(self) -> str:
        assert self.line.unique_reference_id is not None
        return self.line.unique_reference_id

    @property
    def service_period(self) -> Period:
        return self.line.service_period

    def continuity_source(self) -> PersistedLine | None:
        return self.line


@dataclass(frozen=True, slots=True)
class HierarchyItem:
    group: PersistedGroup

    @property
    def identity(self) -> str:
        assert self.group.unique_reference_id is not None
        return self.group.unique_reference_id

    @property
    def service_period(self) -> Period:
        return self.group.service_period

    @property
    def children(self) -> tuple[PersistedLine, ...]:
        return self.group.children

    def continuity_source(self) -> PersistedLine | None:
        """The non-deleted child ending where the group ends; none means "not managed"."""
        for child in self.group.children:
            if not child.deleted and child.service_period.end == self.group.service_period.end:
                return child
        return None

    def is_ignored(self) -> bool:
        return any(c.has_annotation(IGNORE) for c in self.group.children)

    def last_child(self) -> PersistedLine | None:
        """docs/sync.md §5.4 extend: largest end; then non-deleted; then latest start; then largest id."""
        if not self.group.children:
            return None
        return max(
            self.group.children,
            key=lambda c: (c.service_period.end, not c.deleted, c.service_period.start, c.id),
        )


Item = LineItem | HierarchyItem


@dataclass(frozen=True, slots=True)
class PersistedState:
    items: Mapping[str, Item]
    invoices: Mapping[str, Invoice]
    existing_issues: frozenset[IssueKey] = field(default_factory=frozenset)

    def get(self, identity: str) -> Item | None:
        return self.items.get(identity)

    def invoice_of(self, line: PersistedLine) -> Invoice:
        return self.invoices[line.invoice_id]


def normalise_line(line: PersistedLine) -> PersistedLine:
    """Truncate every period and `invoice_at` to seconds (docs/sync.md §4.4)."""
    s, b = line.service_period, line.billing_period
    if not (s.start.microsecond or s.end.microsecond or b.start.microsecond or b.end.microsecond) and not (
        line.invoice_at.microsecond
    ):
        return line  # already whole seconds, as sync writes them: no copy (one per loaded line)
    service, billing, invoice_at = (
        line.service_period.truncated(),
        line.billing_period.truncated(),
        trunc(line.invoice_at),
    )
    return PersistedLine(
        id=line.id,
        invoice_id=line.invoice_id,
        managed_by=line.managed_by,
        unique_reference_id=line.unique_reference_id,
        split_line_group_id=line.split_line_group_id,
        annotations=line.annotations,
        service_period=service,
        billing_period=billing,
        invoice_at=invoice_at,
        price=line.price,
        deleted=line.deleted,
    )


def build_persisted_state(
    lines: Iterable[PersistedLine],
    groups: Iterable[PersistedGroup],
    invoices: Iterable[Invoice],
    existing_issues: Iterable[IssueKey] = (),
) -> PersistedState:
    """Index lines and groups by identity; two items with one identity is an error (docs/sync.md §4.6)."""
    items: dict[str, Item] = {}
    for line in lines:
        identity = line.unique_reference_id
        if identity is None:
            continue
        if identity in items:
            raise _duplicate(identity)
        items[identity] = LineItem(normalise_line(line))
    for group in groups:
        identity = group.unique_reference_id
        if identity is None:
            continue
        if identity in items:
            raise _duplicate(identity)
        children = tuple(sorted((normalise_line(c) for c in group.children), key=_child_order))
        items[identity] = HierarchyItem(PersistedGroup(group.id, identity, group.service_period.truncated(), children))
    return PersistedState(items, {i.id: i for i in invoices}, frozenset(existing_issues))


def _duplicate(identity: str) -> DuplicateIdentityError:
    return DuplicateIdentityError(f"two persisted items have the unique reference id {identity!r}")


def _child_order(line: PersistedLine) -> tuple[datetime, datetime, str]:
    return (line.service_period.start, line.service_period.end, line.id)
