"""Charge targets of docs/credits.md §3.2: what each billable candidate's charge should be, after routing every
identity of one generation to its backend (docs/credits.md §3.1)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from worker.domain.charges.amounts import flat_charge_amount
from worker.domain.charges.items import ChargeIndex, ChargeItem, ChargeType
from worker.domain.charges.routing import CreditMode, SettlementMode, route
from worker.domain.persisted import PersistedState
from worker.domain.prices import FlatPrice, Price
from worker.domain.records import value
from worker.domain.target import Candidate, Target, WantedLine, generate_candidates, is_billable, line_candidate
from worker.domain.timeutil import Period, trunc
from worker.domain.view import SubscriptionView

# --- targets (docs/credits.md §3.2) -----------------------------------------------------------------------


@value
class ChargeTarget:
    """What a charge of this identity should be (the fields of the `charges` table sync decides)."""

    identity: str
    subscription_id: str
    phase_id: str
    item_id: str
    settlement_mode: CreditMode
    type: ChargeType
    currency: str
    name: str
    description: str | None
    feature_key: str | None
    price: Price
    discounts: Mapping[str, Any] | None
    tax_config: Any
    annotations: Mapping[str, Any]
    pro_rating_enabled: bool
    pro_rating_mode: str
    service_period: Period
    full_service_period: Period
    billing_period: Period
    invoice_at: datetime
    amount_before_proration: Decimal | None
    amount_after_proration: Decimal | None

    @property
    def service_end(self) -> datetime:
        return trunc(self.service_period.end)

    def target(self) -> ChargeTarget:
        return self


@value
class ChargeCandidate:
    """A billable candidate routed to a charge, its `ChargeTarget` not built yet: the diff compares only the
    identity and the service end (docs/credits.md §3.4), so a steady sync builds the target of no charge it leaves
    alone (issue 23; docs/performance.md "Charges built when needed"). `target()` builds it."""

    identity: str
    view: SubscriptionView
    candidate: Candidate
    mode: CreditMode

    @property
    def service_end(self) -> datetime:
        return trunc(self.candidate.service.end)

    def target(self) -> ChargeTarget:
        built = charge_target(self.view, self.candidate, self.mode, self.identity)
        assert built is not None  # routed to a charge only when billable (`route_targets`)
        return built


def charge_target(
    view: SubscriptionView, c: Candidate, mode: CreditMode, identity: str | None = None
) -> ChargeTarget | None:
    """The charge target of a (truncated) candidate, or None when it is not billable. The amount plays no
    part: a flat candidate of amount 0 still gives a charge (upstream). `identity`: the candidate's
    `full_identity`, when the caller has it already."""
    if not is_billable(c):
        return None
    record, card, price = view.record, c.item.rate_card, c.price
    before = after = None
    if isinstance(price, FlatPrice):
        before = price.amount
        after = flat_charge_amount(
            before, c.service, c.full, record.pro_rating_enabled, record.pro_rating_mode, record.currency
        )
    # Positional, in `ChargeTarget`'s field order (keyword arguments cost more per charge).
    return ChargeTarget(
        c.full_identity(view.id) if identity is None else identity,
        view.id,
        c.phase.id,
        c.item.record.id,
        mode,
        "flat_fee" if price.is_flat else "usage_based",
        record.currency,
        card.name,
        card.description,
        card.feature_key,
        price,
        card.discounts,
        card.tax_config,
        c.item.record.annotations,
        record.pro_rating_enabled,
        record.pro_rating_mode,
        c.service,
        c.full,
        c.billing,
        trunc(c.invoice_at()),
        before,
        after,
    )


def route_targets(
    view: SubscriptionView,
    as_of: datetime,
    mode: SettlementMode,
    persisted: PersistedState,
    charges: Mapping[str, ChargeItem],
    *,
    customer_deleted_at: datetime | None = None,
    max_lines: int | None = None,
) -> tuple[Target, tuple[ChargeCandidate, ...]]:
    """docs/credits.md §3.1-§3.2: one generation of docs/sync.md §3 (one `max_lines` budget), each identity routed to its
    backend — a persisted line or group keeps lines, a persisted charge keeps charges, a new identity follows
    `mode` — then the line targets (docs/sync.md §3.9) and the charge targets (every billable candidate). An identity
    held by a charge and by a line or group is an error (docs/credits.md §3.1 rule 3), targeted or not. The charge
    targets come as `ChargeCandidate`s, built by `plan_charges` only where a charge changes."""
    heads = ChargeIndex.of(charges).heads
    for identity in sorted(heads.keys() & persisted.items.keys()):
        route(identity, mode, persisted.items[identity], heads[identity].id)
    generation = generate_candidates(view, as_of, persisted, customer_deleted_at, max_lines)
    view, candidates = generation.view, generation.candidates
    lines: list[WantedLine] = []
    charge_targets: list[ChargeCandidate] = []
    for c in candidates:
        identity = c.full_identity(view.id)
        held = heads.get(identity)
        if route(identity, mode, persisted.items.get(identity), held.id if held else None) == "line":
            if (line := line_candidate(view, c, identity)) is not None:
                lines.append(line)
            continue
        if is_billable(c):
            charge_mode = held.settlement_mode if held is not None else cast(CreditMode, mode)
            charge_targets.append(ChargeCandidate(identity, view, c, charge_mode))
    return Target(tuple(lines), generation.max_limit, generation.holds_until), tuple(charge_targets)


def build_charge_targets(
    view: SubscriptionView,
    as_of: datetime,
    mode: CreditMode,
    *,
    line_state: PersistedState | None = None,
    customer_deleted_at: datetime | None = None,
) -> tuple[ChargeTarget, ...]:
    """The charge targets of a credit-mode subscription with no persisted line (`route_targets` without
    lines or charges: every identity is new and goes to a charge)."""
    state = line_state if line_state is not None else PersistedState({}, {})
    routed = route_targets(view, as_of, mode, state, {}, customer_deleted_at=customer_deleted_at)[1]
    return tuple(c.target() for c in routed)
