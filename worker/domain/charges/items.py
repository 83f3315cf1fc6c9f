"""Persisted charges of docs/credits.md §3.3: the rows of `charges`, `charge_runs` and the charge-managed lines, a
live charge with its run and line, and the live charges indexed by identity."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from worker.domain.charges.amounts import discount_total
from worker.domain.charges.routing import CreditMode
from worker.domain.credit_allocation import CreditCharge
from worker.domain.errors import DuplicateIdentityError, PlanningError
from worker.domain.persisted import Invoice
from worker.domain.prices import FlatPrice, Price
from worker.domain.records import value
from worker.domain.timeutil import Period, trunc

ChargeType = Literal["flat_fee", "usage_based"]
ChargeStatus = Literal["created", "active", "final", "deleted"]


# --- persisted charges (docs/credits.md §3.3) -------------------------------------------------------------


def start_at(type_: ChargeType, invoice_at: datetime, service_period: Period) -> datetime:
    """docs/credits.md §3.6: when a `created` charge becomes due — `invoice_at` for a flat charge, the service start
    for a usage charge (`Charge.start_at`)."""
    return invoice_at if type_ == "flat_fee" else service_period.start


@value
class Charge:
    """A row of `charges`; periods and `invoice_at` truncated (docs/sync.md §4.4)."""

    id: str
    customer_id: str
    subscription_id: str
    phase_id: str
    item_id: str
    identity: str
    type: ChargeType
    settlement_mode: CreditMode
    status: ChargeStatus
    currency: str
    name: str
    description: str | None
    feature_key: str | None
    price: Price
    """Flat: the rate card amount as written (the line carries `A`); usage: the rate card price."""
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
    quantity: Decimal | None = None
    rated_amount: Decimal | None = None
    advance_after: datetime | None = None
    deleted_at: datetime | None = None

    @property
    def is_flat(self) -> bool:
        return self.type == "flat_fee"

    @property
    def credit_only(self) -> bool:
        return self.settlement_mode == "credit_only"

    @property
    def booked_at(self) -> datetime:
        """docs/credits.md §3.6: the service start for a flat in-advance charge, the service end otherwise."""
        if isinstance(self.price, FlatPrice) and self.price.in_advance:
            return self.service_period.start
        return self.service_period.end

    def advance_order_key(self) -> tuple[datetime, str, str]:
        """docs/credits.md §3.10: the order one advance step serves due charges in — the time the transition books or
        allocates credit (a credit_only flat charge: its booking time, the later of `invoice_at` and `booked_at`;
        any other: its `advance_after`), then `unique_reference_id`, then `id`. Serving by `advance_after` alone
        would let a charge invoiced before its service start (a cadence shorter than the billing cadence) take
        credit ahead of charges booked before it when several booking times are caught up at once."""
        if self.credit_only and isinstance(self.price, FlatPrice):
            at = max(self.invoice_at, self.booked_at)
        else:
            at = self.advance_after if self.advance_after is not None else self.start_at
        return (at, self.identity, self.id)

    @property
    def start_at(self) -> datetime:
        return start_at(self.type, self.invoice_at, self.service_period)

    @property
    def amount(self) -> Decimal | None:
        """`A`: flat `amount_after_proration`; usage `rated_amount` (null until a quantity is set)."""
        return self.amount_after_proration if self.is_flat else self.rated_amount

    @property
    def discounts_total(self) -> Decimal | None:
        a = self.amount
        return None if a is None else discount_total(a, self.discounts, self.currency)

    def credit_view(self) -> CreditCharge:
        return CreditCharge(self.id, self.currency, self.feature_key, self.invoice_at, self.booked_at)

    def line_price(self) -> Price:
        """The price of the charge's line: flat with `A`, or the usage price."""
        if isinstance(self.price, FlatPrice):
            assert self.amount_after_proration is not None
            return self.price.with_amount(self.amount_after_proration)
        return self.price


@dataclass(frozen=True, slots=True)
class ChargeRun:
    """A row of `charge_runs`: one realization of a charge (docs/credits.md §2.2)."""

    id: str
    charge_id: str
    customer_id: str
    currency: str
    service_period: Period
    quantity: Decimal | None
    amount: Decimal
    discounts_total: Decimal
    credits_total: Decimal
    total: Decimal
    invoice_id: str | None
    line_id: str | None
    booked_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """The charge-managed invoice line of a credit_then_invoice charge (docs/credits.md §3.11). The other columns
    (currency, names, `subscription_*` ids, feature key, discounts, tax config) are the charge's.
    `invoice_id` None: the customer's gathering invoice, found or created by the store (docs/sync.md §6.2)."""

    id: str
    charge_id: str
    invoice_id: str | None
    service_period: Period
    billing_period: Period
    invoice_at: datetime
    price: Price
    quantity: Decimal | None = None
    amount: Decimal | None = None
    discounts_total: Decimal | None = None
    credits_total: Decimal | None = None
    total: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ChargeItem:
    """A live charge with its live run and the run's invoice, and its live line and the line's invoice."""

    charge: Charge
    run: ChargeRun | None = None
    run_invoice: Invoice | None = None
    line: ChargeLine | None = None
    line_invoice: Invoice | None = None

    @property
    def identity(self) -> str:
        return self.charge.identity

    @property
    def run_immutable(self) -> bool:
        return self.run is not None and self.run_invoice is not None and self.run_invoice.immutable


def index_charges(items: Iterable[ChargeItem]) -> dict[str, ChargeItem]:
    """Live charges by identity; two with one identity is an error (docs/sync.md §4.6, docs/credits.md §3.3)."""
    out: dict[str, ChargeItem] = {}
    for item in items:
        if item.charge.deleted_at is not None:
            continue
        if item.identity in out:
            raise _duplicate(item.identity)
        if item.run is not None and item.run.invoice_id is not None and item.run_invoice is None:
            raise PlanningError(f"{item.identity}: run {item.run.id} is on invoice {item.run.invoice_id}, not found")
        out[item.identity] = item
    return out


def _duplicate(identity: str) -> DuplicateIdentityError:
    """docs/sync.md §4.6, docs/credits.md §3.3: two live charges with one identity (`index_charges`, `ChargeIndex`)."""
    return DuplicateIdentityError(f"two charges have the unique reference id {identity!r}")


@value
class ChargeHead:
    """The few fields of a live charge that a sync's routing, diff and ledger read need (docs/credits.md §3.1,
    §3.3, §3.4), taken from its row without building the `ChargeItem`. `service_end` is truncated like
    `Charge.service_period`; `run_immutable` is `ChargeItem.run_immutable`."""

    id: str
    identity: str
    settlement_mode: CreditMode
    currency: str
    service_end: datetime
    run_id: str | None
    run_invoice_id: str | None
    run_immutable: bool

    @staticmethod
    def of(item: ChargeItem) -> ChargeHead:
        c = item.charge
        run = item.run
        return ChargeHead(
            c.id,
            c.identity,
            c.settlement_mode,
            c.currency,
            trunc(c.service_period.end),
            run.id if run is not None else None,
            run.invoice_id if run is not None else None,
            item.run_immutable,
        )


class ChargeIndex(Mapping[str, ChargeItem]):
    """A subscription's live charges by identity, each `ChargeItem` built from its row only when first asked for.

    A steady sync routes and diffs every charge but changes few (docs/credits.md §3.4 compares the identity and
    the service end alone), so the store hands the rows over with their `ChargeHead`s and a `build` function
    (worker.store.charges) instead of building ~60 fields per charge (issue 23; docs/performance.md "Charges
    built when needed"). Iterates in the order the heads were given (the store: charge id). Pure: `build` is a
    deterministic function of the row, and an item, once built, is kept."""

    __slots__ = ("_build", "_heads", "_items", "_rows")

    def __init__(
        self, heads: Iterable[tuple[ChargeHead, Any]], build: Callable[[Any], ChargeItem] | None = None
    ) -> None:
        self._heads: dict[str, ChargeHead] = {}
        self._rows: dict[str, Any] = {}
        self._items: dict[str, ChargeItem] = {}
        self._build = build
        for head, row in heads:
            if head.identity in self._heads:
                raise _duplicate(head.identity)
            self._heads[head.identity] = head
            self._rows[head.identity] = row

    @classmethod
    def of(cls, items: Mapping[str, ChargeItem]) -> ChargeIndex:
        """An index of items already built (by identity, as `index_charges` gives them)."""
        if isinstance(items, ChargeIndex):
            return items
        index = cls((ChargeHead.of(item), None) for item in items.values())
        index._items.update(items)
        return index

    @property
    def heads(self) -> Mapping[str, ChargeHead]:
        """The heads by identity (a per-candidate `heads.get` costs less than a method call)."""
        return self._heads

    @property
    def built(self) -> int:
        """How many items have been built so far (tests and diagnostics)."""
        return len(self._items)

    def missing(self, identities: Iterable[str]) -> tuple[str, ...]:
        """Those of `identities` (live charges of the index) whose item is neither built nor buildable here: the
        store read only their heads (worker.store.snapshot), and reads them in full when a decision needs them
        (`worker.domain.decide.ChargeItemsNeeded`)."""
        return tuple(
            i for i in identities if i not in self._items and (self._build is None or self._rows.get(i) is None)
        )

    def with_items(self, items: Mapping[str, ChargeItem]) -> ChargeIndex:
        """The same index with `items` (by identity, each the live charge of its head) built already."""
        for identity, item in items.items():
            head = self._heads.get(identity)
            if head is None or head.id != item.charge.id:
                raise PlanningError(f"{identity}: charge {item.charge.id} is not the live charge of that identity")
        index = ChargeIndex((), self._build)
        index._heads, index._rows = self._heads, self._rows
        index._items = {**self._items, **items}
        return index

    def __getitem__(self, identity: str) -> ChargeItem:
        item = self._items.get(identity)
        if item is None:
            if identity not in self._heads or self._build is None:
                raise KeyError(identity)
            item = self._items[identity] = self._build(self._rows[identity])
        return item

    def __iter__(self) -> Iterator[str]:
        return iter(self._heads)

    def __len__(self) -> int:
        return len(self._heads)

    def __contains__(self, identity: object) -> bool:
        return identity in self._heads

    def __repr__(self) -> str:
        return f"ChargeIndex({len(self._heads)} charges, {len(self._items)} built)"
