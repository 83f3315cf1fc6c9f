"""Explaining a stored line or charge (docs/sync.md §10.1): its derivation re-run through the target
builder, compared with what is stored, and what a sync does about any difference.

Pure: the app layer loads the stored row and runs `generate_candidates` / `route_targets`; this module only
compares and words the result. "targeted" means a sync at `as_of` targets this identity with exactly the stored
period and amount; everything else is "not targeted", with the reason and the sync's answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.domain.charges.targets import ChargeTarget
from worker.domain.derivation import describe, instant, period_json
from worker.domain.money import format_decimal
from worker.domain.persisted import IGNORE, annotation_true
from worker.domain.prices import FlatPrice
from worker.domain.target import Candidate, TargetLine
from worker.domain.timeutil import Period, format_instant
from worker.domain.view import SubscriptionView

TARGETED = "targeted"
NOT_TARGETED = "not targeted"


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    id: str
    type: str
    status: str
    immutable: bool
    deleted: bool


@dataclass(frozen=True, slots=True)
class GroupFacts:
    id: str
    identity: str | None
    service_period: Period
    sibling_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoredLine:
    """What the row holds (times truncated to seconds, docs/sync.md §4.4)."""

    id: str
    identity: str | None
    subscription_id: str | None
    managed_by: str
    deleted: bool
    annotations: Mapping[str, Any]
    service_period: Period
    invoice_at: datetime
    amount: Decimal | None
    invoice: InvoiceFacts
    group: GroupFacts | None = None
    charge_id: str | None = None
    """A charge-managed line (docs/credits.md §3.11): `identity` is then its charge's."""


@dataclass(frozen=True, slots=True)
class StoredCharge:
    id: str
    identity: str
    status: str
    settlement_mode: str
    deleted: bool
    service_period: Period
    invoice_at: datetime
    amount: Decimal | None
    advance_after: datetime | None
    is_flat: bool
    in_advance: bool
    has_live_run: bool
    run_immutable: bool


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


def invoice_json(inv: InvoiceFacts) -> dict[str, Any]:
    """docs/sync.md §6.3: what the invoice's kind means for the line."""
    if inv.immutable:
        why = "immutable (issued, paid or voided): a sync never changes it, it records a validation issue (docs/sync.md §6.4)"
    elif inv.type == "gathering":
        why = "gathering: the line waits for invoicing; a sync may update or delete it (docs/sync.md §6.3, §9)"
    else:
        why = (
            "draft: invoiced already; a sync may still change the period and amount, not invoice_at (docs/sync.md §6.3)"
        )
    return {
        "id": inv.id,
        "type": inv.type,
        "status": inv.status,
        "immutable": inv.immutable,
        "deleted": inv.deleted,
        "why": why,
    }


def explain_line(
    view: SubscriptionView | None,
    stored: StoredLine,
    candidate: Candidate | None,
    target: TargetLine | None,
    routed: str | None,
    as_of: datetime,
) -> dict[str, Any]:
    """The explanation of one line: `candidate` from a generation far enough to reach it, `target` the line a sync
    at `as_of` targets with its identity (None when none; for a charge-managed line, `charge_line` of its charge's
    target), `routed` the backend of its identity ("line" or "charge", docs/credits.md §3.1)."""
    compared = stored.group.service_period if stored.group is not None else stored.service_period
    derived = describe(view, candidate, as_of, charge=False) if view is not None and candidate is not None else None
    differences: list[dict[str, Any]] = []
    reason: str
    if stored.subscription_id is None:
        reason = "a line added by hand, not from a subscription: sync never produces it"
    elif stored.identity is None:
        reason = "a line without a sync identity: sync never produces it"
    elif view is None:
        reason = "the subscription is deleted: its target is empty (docs/sync.md §8.1)"
    elif candidate is None:
        reason = "the document no longer produces this identity (its item, version or phase is gone or moved)"
    elif routed == "charge" and stored.charge_id is None:
        reason = "the identity is routed to a charge, not a line (docs/credits.md §3.1)"
    elif derived is not None and not derived["billable"]:
        reason = "the period is not billable: billed in arrears over a zero-length period (docs/sync.md §3.9)"
    elif target is None and derived is not None and not derived["horizon"]["within"]:
        reason = f"beyond the horizon of a sync at {format_instant(as_of)} (docs/sync.md §3.2)"
    elif target is None:
        reason = "the amount is zero: no expected line (docs/sync.md §3.9)"
    else:
        differences = _differences(compared, stored.amount, target, grouped=stored.group is not None)
        reason = "the stored line differs from the target" if differences else ""
    status = TARGETED if target is not None and not differences and not reason else NOT_TARGETED
    return {
        "kind": "line",
        "id": stored.id,
        "unique_reference_id": stored.identity,
        "status": status,
        "targeted": status == TARGETED,
        "reason": reason or None,
        "stored": {
            "service_period": period_json(stored.service_period),
            "invoice_at": format_instant(stored.invoice_at),
            "amount": _amount(stored.amount),
            "managed_by": stored.managed_by,
            "deleted": stored.deleted,
        },
        "target": None if target is None else _target_line_json(target),
        "differences": differences,
        "derivation": derived,
        "invoice": invoice_json(stored.invoice),
        "split_group": _group_json(stored),
        "sync": _line_sync(stored, status, target),
    }


def charge_line(t: ChargeTarget) -> TargetLine:
    """The line a charge target implies for a credit_then_invoice charge (docs/credits.md §3.11): the charge's periods,
    `invoice_at`, and the flat price with `A`."""
    price = t.price
    if isinstance(price, FlatPrice) and t.amount_after_proration is not None:
        price = price.with_amount(t.amount_after_proration)
    return TargetLine(
        identity=t.identity,
        subscription_id=t.subscription_id,
        phase_id=t.phase_id,
        item_id=t.item_id,
        currency=t.currency,
        name=t.name,
        description=t.description,
        service_period=t.service_period,
        billing_period=t.billing_period,
        invoice_at=t.invoice_at,
        price=price,
        feature_key=t.feature_key,
        discounts=t.discounts,
        tax_config=t.tax_config,
    )


def _target_line_json(t: TargetLine) -> dict[str, Any]:
    return {
        "service_period": period_json(t.service_period),
        "billing_period": period_json(t.billing_period),
        "invoice_at": format_instant(t.invoice_at),
        "amount": _amount(t.price.amount) if isinstance(t.price, FlatPrice) else None,
    }


def _differences(period: Period, amount: Decimal | None, target: TargetLine, *, grouped: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if period != target.service_period:
        field = "split_group.service_period" if grouped else "service_period"
        out.append({"field": field, "stored": period_json(period), "target": period_json(target.service_period)})
    want = target.price.amount if isinstance(target.price, FlatPrice) else None
    if (amount is None) != (want is None) or (amount is not None and want is not None and amount != want):
        out.append({"field": "amount", "stored": _amount(amount), "target": _amount(want)})
    return out


def _group_json(stored: StoredLine) -> dict[str, Any] | None:
    g = stored.group
    if g is None:
        return None
    return {
        "id": g.id,
        "unique_reference_id": g.identity,
        "service_period": period_json(g.service_period),
        "siblings": list(g.sibling_ids),
        "why": "invoicing split the line at a billable period's end (docs/sync.md §9 step 3); the group carries the "
        "identity and the whole period, each child one part",
    }


def _line_sync(stored: StoredLine, status: str, target: TargetLine | None) -> str:
    """What a sync does about this line (docs/sync.md §5.3, §5.4, §6.3, §6.4)."""
    if status == TARGETED:
        return "nothing: the line is what the document targets (docs/sync.md §8.5)"
    if stored.deleted:
        if stored.managed_by == "manual":
            return "nothing: deleted by hand, and a person's deletion wins (docs/sync.md §4)"
        return "nothing: a deleted subscription line is not loaded; its identity may be created again (docs/sync.md §4)"
    if stored.identity is None or stored.subscription_id is None:
        return "nothing: the line has no sync identity"
    if stored.charge_id is not None:
        return f"it follows its charge {stored.charge_id} (docs/credits.md §3.7, §3.11): explain the charge"
    if annotation_true(stored.annotations, IGNORE):
        return "nothing: the line carries billing.subscription.sync.ignore (docs/sync.md §5.3)"
    if stored.invoice.immutable:
        return "a validation issue on the immutable invoice; the line stays as it is (docs/sync.md §6.4)"
    if target is None:
        return "the next sync deletes it (docs/sync.md §5.3 delete)"
    if stored.managed_by != "subscription" and stored.group is None:
        return f"nothing: managed_by is {stored.managed_by!r}, an edit by hand wins (docs/sync.md §5.3)"
    return "the next sync updates it to the target (docs/sync.md §5.3, §5.4)"


# --- charges (docs/credits.md §3) ------------------------------------------------------------------------


_STATES = {
    "created": "written by sync; waits for its start_at (invoice_at for a flat charge, the service start for usage)",
    "active": "due, not yet final: credit_only flat waits for booked_at, usage for its quantity; "
    "credit_then_invoice waits for invoicing or for its invoice to become immutable",
    "final": "realized: booked (credit_only) or its run is on an immutable invoice (credit_then_invoice)",
    "deleted": "removed by sync: the document no longer targets it",
}


def explain_charge(
    view: SubscriptionView | None,
    stored: StoredCharge,
    candidate: Candidate | None,
    target: ChargeTarget | None,
    as_of: datetime,
) -> dict[str, Any]:
    """The explanation of one charge (docs/credits.md §3.2-§3.7); `target` is the charge target of its identity
    from a sync at `as_of`."""
    derived = describe(view, candidate, as_of, charge=True) if view is not None and candidate is not None else None
    differences: list[dict[str, Any]] = []
    if view is None:
        reason = "the subscription is deleted: its target is empty (docs/sync.md §8.1)"
    elif candidate is None:
        reason = "the document no longer produces this identity"
    elif target is None and derived is not None and not derived["billable"]:
        reason = "the period is not billable (docs/sync.md §3.9)"
    elif target is None:
        reason = f"not routed to a charge, or beyond the horizon of a sync at {format_instant(as_of)}"
    else:
        if stored.service_period != target.service_period:
            differences.append(
                {
                    "field": "service_period",
                    "stored": period_json(stored.service_period),
                    "target": period_json(target.service_period),
                }
            )
        want = target.amount_after_proration
        if (stored.amount is None) != (want is None) or (
            stored.amount is not None and want is not None and stored.amount != want
        ):
            differences.append({"field": "amount", "stored": _amount(stored.amount), "target": _amount(want)})
        reason = "the stored charge differs from the target" if differences else ""
    if stored.deleted and not reason:
        reason = "the charge is deleted"
    status = TARGETED if target is not None and not reason else NOT_TARGETED
    return {
        "kind": "charge",
        "id": stored.id,
        "unique_reference_id": stored.identity,
        "status": status,
        "targeted": status == TARGETED,
        "reason": reason or None,
        "stored": {
            "service_period": period_json(stored.service_period),
            "invoice_at": format_instant(stored.invoice_at),
            "amount": _amount(stored.amount),
            "status": stored.status,
            "settlement_mode": stored.settlement_mode,
            "advance_after": instant(stored.advance_after),
        },
        "target": None
        if target is None
        else {
            "service_period": period_json(target.service_period),
            "billing_period": period_json(target.billing_period),
            "invoice_at": format_instant(target.invoice_at),
            "amount": _amount(target.amount_after_proration),
        },
        "differences": differences,
        "derivation": derived,
        "state": {"status": stored.status, "why": _state_why(stored)},
        "sync": _charge_sync(stored, status, target),
    }


def _state_why(stored: StoredCharge) -> str:
    base = _STATES.get(stored.status, stored.status)
    booked = "the service start" if stored.is_flat and stored.in_advance else "the service end"
    extra = f"; booked_at is {booked} (docs/credits.md §3.6)"
    if stored.advance_after is not None:
        extra += f"; the next advance is due at {format_instant(stored.advance_after)}"
    return base + extra


def _charge_sync(stored: StoredCharge, status: str, target: ChargeTarget | None) -> str:
    if status == TARGETED:
        return "nothing: the charge is what the document targets"
    if stored.deleted:
        return "nothing: the charge is deleted"
    if stored.run_immutable:
        return (
            "its own fields change; a validation issue when visible; run, line and credits stay (docs/credits.md §3.13)"
        )
    if target is None:
        return "the next sync deletes it, correcting any credit it consumed (docs/credits.md §3.7)"
    return "the next sync shrinks or extends it and re-rates it (docs/credits.md §3.7)"
