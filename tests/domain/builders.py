"""Small builders for domain tests: the pure core's subscriptions, phases, items and persisted lines in a
few words (documents and rows are `tests/builders.py`)."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from tests.builders import t
from worker.domain.persisted import Invoice, PersistedGroup, PersistedLine, PersistedState, build_persisted_state
from worker.domain.prices import FlatPrice, Price, UsagePrice
from worker.domain.target import Target, TargetLine, build_target
from worker.domain.timeutil import Duration, Period
from worker.domain.view import ItemRecord, PhaseRecord, RateCard, SubscriptionRecord, SubscriptionView, build_view

_ids = itertools.count()


def p(a: str, b: str) -> Period:
    return Period(t(a), t(b))


def flat(amount: str, term: str = "in_advance") -> FlatPrice:
    return FlatPrice(Decimal(amount), term)  # type: ignore[arg-type]


def unit(amount: str) -> UsagePrice:
    return UsagePrice("unit", {"type": "unit", "amount": amount})


def item(
    key: str,
    price: Price | None,
    start: str,
    end: str | None = None,
    cadence: str | None = "P1M",
    feature_key: str | None = None,
    id: str | None = None,
    name: str | None = None,
) -> ItemRecord:
    card = RateCard(
        name=name or key,
        description=None,
        feature_key=feature_key if feature_key is not None else (None if price is None or price.is_flat else key),
        billing_cadence=Duration.parse(cadence) if cadence else None,
        price=price,
        discounts={"percentage": None, "usage": None},
        tax_config=None,
    )
    return ItemRecord(id or f"it_{next(_ids)}", key, t(start), t(end) if end else None, card, {})


def phase(key: str, start: str, *items: ItemRecord, sort_hint: int | None = None) -> PhaseRecord:
    return PhaseRecord(f"ph_{key}", key, key, t(start), sort_hint, tuple(items))


def sub(
    *phases: PhaseRecord,
    start: str = "2024-01-01",
    anchor: str | None = None,
    end: str | None = None,
    cadence: str = "P1M",
    currency: str = "USD",
    pro_rating: bool = True,
    id: str = "sub_01",
) -> SubscriptionView:
    record = SubscriptionRecord(
        namespace="acme",
        id=id,
        customer_id="cust_01",
        currency=currency,
        billing_cadence=Duration.parse(cadence),
        billing_anchor=t(anchor or start),
        pro_rating_enabled=pro_rating,
        pro_rating_mode="prorate_prices",
        active_from=t(start),
        active_to=t(end) if end else None,
    )
    return build_view(record, phases)


EMPTY = build_persisted_state([], [], [])


def target(
    view: SubscriptionView, as_of: str, persisted: PersistedState = EMPTY, customer_deleted_at: str | None = None
) -> Target:
    return build_target(view, t(as_of), persisted, t(customer_deleted_at) if customer_deleted_at else None)


def lines_by_id(tgt: Target) -> dict[str, TargetLine]:
    return {line.identity.removeprefix("sub_01/"): line for line in tgt.lines}


GATHERING = Invoice("inv_g", "gathering", "gathering", False, False)
DRAFT = Invoice("inv_d", "standard", "draft", False, False)
ISSUED = Invoice("inv_i", "standard", "issued", True, False)


def line_from(
    target: TargetLine, *, id: str | None = None, invoice: Invoice = GATHERING, **changes: Any
) -> PersistedLine:
    """A persisted line as sync would have written it for `target`, with `changes` applied."""
    fields: dict[str, Any] = dict(
        id=id or f"ln_{next(_ids)}",
        invoice_id=invoice.id,
        managed_by="subscription",
        unique_reference_id=target.identity,
        split_line_group_id=None,
        annotations={},
        service_period=target.service_period,
        billing_period=target.billing_period,
        invoice_at=target.invoice_at,
        price=target.price,
        deleted=False,
    )
    fields.update(changes)
    return PersistedLine(**fields)


def state(
    *lines: PersistedLine,
    groups: tuple[PersistedGroup, ...] = (),
    invoices: tuple[Invoice, ...] = (GATHERING, DRAFT, ISSUED),
) -> PersistedState:
    return build_persisted_state(lines, groups, invoices)


def persisted_from(tgt: Target, invoice: Invoice = GATHERING) -> PersistedState:
    """The state after a sync wrote `tgt` onto `invoice`."""
    return state(*(line_from(line, invoice=invoice) for line in tgt.lines))
