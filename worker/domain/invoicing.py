"""Invoicing pending lines (docs/sync.md §9): which gathering lines are billable at an instant, where
progressively billed usage lines are split, and which lines move onto new draft invoices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from worker.domain.errors import PlanningError
from worker.domain.prices import Price, UsagePrice
from worker.domain.timeutil import Period, trunc


@dataclass(frozen=True, slots=True)
class PendingLine:
    """A live line of a live gathering invoice, with its times truncated."""

    id: str
    invoice_id: str
    currency: str
    price: Price | None
    service_period: Period
    invoice_at: datetime
    split_line_group_id: str | None
    charge_id: str | None = None
    """Set on a charge line (docs/credits.md §3.11): billable by its own rule, never split."""
    quantity: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Split:
    """Cut line `line_id` at `at`: it keeps `[start, at)`; a new line `post_line_id` (when not empty)
    takes `[at, end)` and stays on the gathering invoice. Both belong to group `group_id`, created
    from the line when `new_group`."""

    line_id: str
    at: datetime
    group_id: str
    new_group: bool
    post_line_id: str | None


@dataclass(frozen=True, slots=True)
class NewInvoice:
    id: str
    currency: str
    line_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InvoicingPlan:
    splits: tuple[Split, ...]
    invoices: tuple[NewInvoice, ...]
    gathering_invoice_ids: tuple[str, ...]
    """Gathering invoices that lost lines: emptied ones are soft-deleted."""

    @property
    def is_empty(self) -> bool:
        return not self.invoices


def billable_period(line: PendingLine, x: datetime, progressive: bool) -> Period | None:
    """docs/sync.md §9 step 2: the part of the line billable at `x`, or None."""
    at = trunc(x)
    s, e = line.service_period.start, line.service_period.end
    price = line.price
    if line.charge_id is not None:  # docs/credits.md §3.11 step 1 (worker.domain.charges.is_invoiceable)
        if line.invoice_at > at:
            return None
        if price is None or price.is_flat:
            return line.service_period
        return line.service_period if line.quantity is not None and e <= at else None
    if line.split_line_group_id is not None and (
        price is None or price.is_flat or (isinstance(price, UsagePrice) and not price.progressively_billable)
    ):
        raise PlanningError(
            f"line {line.id} belongs to a split line group but its price cannot be billed progressively"
        )
    if price is None or price.is_flat:
        return line.service_period if line.invoice_at <= at else None
    if not progressive:
        return line.service_period if e <= at and line.invoice_at <= at else None
    assert isinstance(price, UsagePrice)
    if price.progressively_billable:
        return Period(s, min(at, e)) if at > s else None
    return line.service_period if e <= at else None


def plan_invoicing(
    lines: Sequence[PendingLine],
    x: datetime,
    *,
    progressive: bool,
    new_id: Callable[[str], str],
) -> InvoicingPlan:
    """docs/sync.md §9 steps 2-5: splits, then one draft invoice per currency with the billable lines."""
    splits: list[Split] = []
    by_currency: dict[str, list[str]] = {}
    sources: set[str] = set()
    for line in sorted(lines, key=lambda ln: (ln.service_period.start, ln.id)):
        period = billable_period(line, x, progressive)
        if period is None:
            continue
        if period.end < line.service_period.end:
            new_group = line.split_line_group_id is None
            group_id = new_id("slg") if new_group else line.split_line_group_id
            assert group_id is not None
            rest = Period(period.end, line.service_period.end)
            post = (
                None
                if rest.truncated().is_empty and line.price is not None and not line.price.is_flat
                else new_id("il")
            )
            splits.append(Split(line.id, period.end, group_id, new_group, post))
        by_currency.setdefault(line.currency, []).append(line.id)
        sources.add(line.invoice_id)
    invoices = tuple(NewInvoice(new_id("inv"), cur, tuple(ids)) for cur, ids in sorted(by_currency.items()))
    return InvoicingPlan(tuple(splits), invoices, tuple(sorted(sources)))
