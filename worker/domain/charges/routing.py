"""Routing of docs/credits.md §3.1: the settlement modes, and which backend (lines or charges) holds an identity."""

from __future__ import annotations

from typing import Literal

from worker.domain.errors import DomainError
from worker.domain.persisted import HierarchyItem, LineItem

SettlementMode = Literal["invoice_only", "credit_then_invoice", "credit_only"]
CreditMode = Literal["credit_then_invoice", "credit_only"]
SETTLEMENT_MODES: tuple[SettlementMode, ...] = ("invoice_only", "credit_then_invoice", "credit_only")


class RoutingError(DomainError):
    """One identity held by a charge and by a line or group (docs/credits.md §3.1 rule 3)."""


# --- routing (docs/credits.md §3.1) -----------------------------------------------------------------------


def route(
    identity: str,
    mode: SettlementMode,
    line_item: LineItem | HierarchyItem | None,
    charge_id: str | None,
) -> Literal["line", "charge"]:
    """The backend of one identity: a persisted item keeps its own; a new one follows the mode."""
    if line_item is not None and charge_id is not None:
        if isinstance(line_item, LineItem):
            held = f"invoice line {line_item.line.id}"
        else:
            held = f"split line group {line_item.group.id}"
        raise RoutingError(f"{identity}: held by both charge {charge_id} and {held}")
    if line_item is not None:
        return "line"
    if charge_id is not None:
        return "charge"
    return "line" if mode == "invoice_only" else "charge"
