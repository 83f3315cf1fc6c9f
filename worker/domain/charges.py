"""Charges of CREDITS §3: routing (§3.1), targets (§3.2), persisted charges (§3.3), the diff (§3.4), amounts
and rating (§3.5), and the charge engine — the state machine (§3.6), the effects of a sync's patches (§3.7),
booking (§3.10), invoicing (§3.11), `set-quantity` (§3.12) and immutable invoices (§3.13).

Pure: the engine reads no clock (`now` is given), generates ids through the `new_id` it is given, and takes
credit through the `Ledger`s it is given (worker.domain.credit_allocation). What it decides is collected in
a `ChargeChanges` for the store to write, one statement per kind of write; the ledgers hold the new
allocation rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Context, Decimal
from typing import Any, Literal, cast

from worker.domain.credit_allocation import CreditCharge, Ledger
from worker.domain.errors import DomainError, DuplicateIdentityError, PlanningError
from worker.domain.money import format_decimal, parse_decimal, prorate, proration_ratio, round_cur
from worker.domain.persisted import HierarchyItem, Invoice, IssueKey, LineItem, PersistedState
from worker.domain.prices import FlatPrice, Price, UsagePrice
from worker.domain.target import Candidate, Target, TargetLine, expected_line, generate_candidates, is_billable
from worker.domain.timeutil import Period, format_instant, trunc
from worker.domain.updater import NewIssue
from worker.domain.view import SubscriptionView

SettlementMode = Literal["invoice_only", "credit_then_invoice", "credit_only"]
CreditMode = Literal["credit_then_invoice", "credit_only"]
ChargeType = Literal["flat_fee", "usage_based"]
ChargeStatus = Literal["created", "active", "final", "deleted"]
SETTLEMENT_MODES: tuple[SettlementMode, ...] = ("invoice_only", "credit_then_invoice", "credit_only")

ZERO = Decimal(0)
_EXACT = Context(prec=100)  # products of 38-digit amounts: exact, rounded once by round_cur


class ChargeError(DomainError):
    """A charge command refused for the state of the charge (CREDITS §2.3 exit 1), naming the charge."""


class RoutingError(DomainError):
    """One identity held by a charge and by a line or group (CREDITS §3.1 rule 3)."""


# --- routing (CREDITS §3.1) -----------------------------------------------------------------------


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


# --- amounts (CREDITS §3.5) -----------------------------------------------------------------------


def flat_charge_amount(
    amount_before_proration: Decimal,
    service: Period,
    full: Period,
    pro_rating_enabled: bool,
    pro_rating_mode: str,
    currency: str,
) -> Decimal:
    """`A` of a flat charge: prorated by the 16-place ratio when `0 < s < f` (truncated periods), else the
    rounded amount. Unlike lines (SPEC §3.9 rule 3), a period cut by the subscription end is prorated."""
    s, f = service.truncated().seconds(), full.truncated().seconds()
    if pro_rating_enabled and pro_rating_mode == "prorate_prices" and 0 < s < f:
        return prorate(amount_before_proration, proration_ratio(s, f), currency)
    return round_cur(amount_before_proration, currency)


def _dec(value: Any) -> Decimal:
    return ZERO if value is None else parse_decimal(value)


def _mul(a: Decimal, b: Decimal, currency: str) -> Decimal:
    return round_cur(_EXACT.multiply(a, b), currency)


def _tiers(price: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Tiers by `up_to_amount` ascending, the null one last."""
    tiers: list[Mapping[str, Any]] = list(price.get("tiers") or [])
    return sorted(tiers, key=lambda t: (t.get("up_to_amount") is None, _dec(t.get("up_to_amount"))))


def rate_usage(
    price: Mapping[str, Any], quantity: Decimal, discounts: Mapping[str, Any] | None, currency: str
) -> Decimal:
    """`A` of a usage charge: the rate card price rated on `quantity` less the usage discount, each component
    rounded, then clamped to the rounded minimum and maximum (CREDITS §3.5, project)."""
    usage = (discounts or {}).get("usage") or {}
    q = max(ZERO, quantity - _dec(usage.get("quantity")))
    kind = price.get("type")
    if kind == "unit":
        base = _mul(q, _dec(price.get("amount")), currency)
    elif kind == "package":
        per_package = _dec(price.get("quantity_per_package"))
        if per_package <= 0:
            raise DomainError("price.quantity_per_package: must be positive to rate a package price")
        packages = Decimal(math.ceil(_EXACT.divide(q, per_package)))
        base = _mul(packages, _dec(price.get("amount")), currency)
    elif kind == "dynamic":
        base = _mul(q, _dec(price.get("multiplier")), currency)
    elif kind == "tiered" and price.get("mode") == "volume":
        base = ZERO
        for tier in _tiers(price):
            up_to = tier.get("up_to_amount")
            if up_to is None or q <= _dec(up_to):
                base = round_cur(_dec(tier.get("flat_price")), currency) + _mul(
                    q, _dec(tier.get("unit_price")), currency
                )
                break
    elif kind == "tiered":
        base = ZERO
        lower = ZERO
        for i, tier in enumerate(_tiers(price)):
            if i > 0 and q <= lower:
                break
            up_to = tier.get("up_to_amount")
            top = q if up_to is None else min(q, _dec(up_to))
            flat = round_cur(_dec(tier.get("flat_price")), currency)
            base += flat + _mul(max(ZERO, top - lower), _dec(tier.get("unit_price")), currency)
            if up_to is None:
                break
            lower = _dec(up_to)
    else:
        raise DomainError(f"price.type: cannot rate a {kind!r} price")
    if price.get("minimum_amount") is not None:
        base = max(base, round_cur(_dec(price["minimum_amount"]), currency))
    if price.get("maximum_amount") is not None:
        base = min(base, round_cur(_dec(price["maximum_amount"]), currency))
    return base


def discount_total(amount: Decimal, discounts: Mapping[str, Any] | None, currency: str) -> Decimal:
    """`D = min(A, round_cur(A × p / 100))` with `p` the percentage discount, else 0 (CREDITS §3.5)."""
    percentage = (discounts or {}).get("percentage") or {}
    p = percentage.get("percentage")
    if p is None:
        return ZERO
    return min(amount, round_cur(_EXACT.multiply(amount, _dec(p)).scaleb(-2), currency))


# --- targets (CREDITS §3.2) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
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


def charge_target(view: SubscriptionView, c: Candidate, mode: CreditMode) -> ChargeTarget | None:
    """The charge target of a (truncated) candidate, or None when it is not billable. The amount plays no
    part: a flat candidate of amount 0 still gives a charge (upstream)."""
    if not is_billable(c):
        return None
    record, card = view.record, c.item.rate_card
    before = after = None
    if isinstance(c.price, FlatPrice):
        before = c.price.amount
        after = flat_charge_amount(
            before, c.service, c.full, record.pro_rating_enabled, record.pro_rating_mode, record.currency
        )
    return ChargeTarget(
        identity=f"{view.id}/{c.phase.key}/{c.identity}",
        subscription_id=view.id,
        phase_id=c.phase.id,
        item_id=c.item.record.id,
        settlement_mode=mode,
        type="flat_fee" if c.price.is_flat else "usage_based",
        currency=record.currency,
        name=card.name,
        description=card.description,
        feature_key=card.feature_key,
        price=c.price,
        discounts=card.discounts,
        tax_config=card.tax_config,
        annotations=c.item.record.annotations,
        pro_rating_enabled=record.pro_rating_enabled,
        pro_rating_mode=record.pro_rating_mode,
        service_period=c.service,
        full_service_period=c.full,
        billing_period=c.billing,
        invoice_at=trunc(c.invoice_at()),
        amount_before_proration=before,
        amount_after_proration=after,
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
) -> tuple[Target, tuple[ChargeTarget, ...]]:
    """CREDITS §3.1-§3.2: one generation of SPEC §3 (one `max_lines` budget), each identity routed to its
    backend — a persisted line or group keeps lines, a persisted charge keeps charges, a new identity follows
    `mode` — then the line targets (SPEC §3.9) and the charge targets (every billable candidate). An identity
    held by a charge and by a line or group is an error (CREDITS §3.1 rule 3), targeted or not."""
    for identity in sorted(charges.keys() & persisted.items.keys()):
        route(identity, mode, persisted.items[identity], charges[identity].charge.id)
    view, candidates, max_limit = generate_candidates(view, as_of, persisted, customer_deleted_at, max_lines)
    lines: list[TargetLine] = []
    charge_targets: list[ChargeTarget] = []
    for c in candidates:
        identity = f"{view.id}/{c.phase.key}/{c.identity}"
        held = charges.get(identity)
        if route(identity, mode, persisted.items.get(identity), held.charge.id if held else None) == "line":
            if (line := expected_line(view, c)) is not None:
                lines.append(line)
            continue
        charge_mode = held.charge.settlement_mode if held is not None else cast(CreditMode, mode)
        if (target := charge_target(view, c, charge_mode)) is not None:
            charge_targets.append(target)
    return Target(tuple(lines), max_limit), tuple(charge_targets)


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
    return route_targets(view, as_of, mode, state, {}, customer_deleted_at=customer_deleted_at)[1]


# --- persisted charges (CREDITS §3.3) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Charge:
    """A row of `charges`; periods and `invoice_at` truncated (SPEC §4.4)."""

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
        """CREDITS §3.6: the service start for a flat in-advance charge, the service end otherwise."""
        if isinstance(self.price, FlatPrice) and self.price.in_advance:
            return self.service_period.start
        return self.service_period.end

    @property
    def start_at(self) -> datetime:
        """CREDITS §3.6: `invoice_at` for a flat charge, the service start for a usage charge."""
        return self.invoice_at if self.is_flat else self.service_period.start

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
    """A row of `charge_runs`: one realization of a charge (CREDITS §2.2)."""

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
    """The charge-managed invoice line of a credit_then_invoice charge (CREDITS §3.11). The other columns
    (currency, names, `subscription_*` ids, feature key, discounts, tax config) are the charge's.
    `invoice_id` None: the customer's gathering invoice, found or created by the store (SPEC §6.2)."""

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
    """Live charges by identity; two with one identity is an error (SPEC §4.6, CREDITS §3.3)."""
    out: dict[str, ChargeItem] = {}
    for item in items:
        if item.charge.deleted_at is not None:
            continue
        if item.identity in out:
            raise DuplicateIdentityError(f"two charges have the unique reference id {item.identity!r}")
        if item.run is not None and item.run.invoice_id is not None and item.run_invoice is None:
            raise PlanningError(f"{item.identity}: run {item.run.id} is on invoice {item.run.invoice_id}, not found")
        out[item.identity] = item
    return out


# --- diff (CREDITS §3.4) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargeCreate:
    identity: str
    target: ChargeTarget
    reason: Literal["create"] = "create"


@dataclass(frozen=True, slots=True)
class ChargeUpdate:
    """Shrink or extend: the four end fields from the target; only the service end names the op."""

    identity: str
    item: ChargeItem
    target: ChargeTarget
    reason: Literal["shrink", "extend"]


@dataclass(frozen=True, slots=True)
class ChargeDelete:
    identity: str
    item: ChargeItem
    reason: Literal["delete"] = "delete"


ChargePatch = ChargeCreate | ChargeUpdate | ChargeDelete


def plan_charges(targets: Iterable[ChargeTarget], charges: Mapping[str, ChargeItem]) -> tuple[ChargePatch, ...]:
    """Deletes, shrinks and extends in SPEC §5.2 order (removed identities ascending, then targeted ones),
    then creates in ascending identity order (upstream: a delete may free an identity a create reuses)."""
    by_identity: dict[str, ChargeTarget] = {}
    for t in targets:
        if t.identity in by_identity:
            raise DuplicateIdentityError(f"two charge targets have the unique reference id {t.identity!r}")
        by_identity[t.identity] = t
    changes: list[ChargePatch] = [ChargeDelete(i, charges[i]) for i in sorted(charges) if i not in by_identity]
    creates: list[ChargePatch] = []
    for identity in sorted(by_identity):
        target = by_identity[identity]
        item = charges.get(identity)
        if item is None:
            creates.append(ChargeCreate(identity, target))
            continue
        new_end, old_end = trunc(target.service_period.end), trunc(item.charge.service_period.end)
        if new_end < old_end:
            changes.append(ChargeUpdate(identity, item, target, "shrink"))
        elif new_end > old_end:
            changes.append(ChargeUpdate(identity, item, target, "extend"))
    return tuple(changes + creates)


# --- the engine (CREDITS §3.6, §3.7, §3.10-§3.13) -------------------------------------------------

ChargeOp = Literal["charge_create", "charge_shrink", "charge_extend", "charge_delete", "validation_issue"]


@dataclass(frozen=True, slots=True)
class ChargePrintedPatch:
    """A printed charge patch (CREDITS §2.6); `line_id`/`invoice_id` are set only on `validation_issue`."""

    op: ChargeOp
    unique_reference_id: str
    reason: str
    service_period: Period
    charge_id: str | None
    line_id: str | None = None
    invoice_id: str | None = None
    group_id: None = None  # the printed shape of CONTRACT §6 has it; a charge patch never names a group


@dataclass(frozen=True, slots=True)
class NewChargeLine:
    line: ChargeLine
    charge: Charge


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One charge moved on by advance, `set-quantity`, invoicing or `set-status` (CREDITS §2.4 `changes`)."""

    charge_id: str
    unique_reference_id: str
    status_before: ChargeStatus
    status: ChargeStatus
    run_id: str | None


@dataclass(slots=True)
class ChargeChanges:
    """Row writes decided by the engine, keyed by id (the last state wins) and kept in decision order.

    The store writes, in this order: new charges, charge updates, run updates, line deletes, new runs, new
    lines (a deleted line frees `uq_invoice_lines_charge` for the new one), line updates, allocation rows
    (the ledgers' `new_rows`), issues, then the SPEC §6.3 emptied-invoice rules for `touched_invoices`."""

    new_charges: dict[str, Charge] = field(default_factory=dict)
    charge_writes: dict[str, Charge] = field(default_factory=dict)
    new_runs: dict[str, ChargeRun] = field(default_factory=dict)
    run_writes: dict[str, ChargeRun] = field(default_factory=dict)
    new_lines: dict[str, NewChargeLine] = field(default_factory=dict)
    line_writes: dict[str, ChargeLine] = field(default_factory=dict)
    line_deletes: list[str] = field(default_factory=list)
    issues: list[NewIssue] = field(default_factory=list)
    touched_invoices: set[str] = field(default_factory=set)
    patches: list[ChargePrintedPatch] = field(default_factory=list)
    status_changes: list[StatusChange] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (
            self.new_charges
            or self.charge_writes
            or self.new_runs
            or self.run_writes
            or self.new_lines
            or self.line_writes
            or self.line_deletes
            or self.issues
        )


def is_invoiceable(charge: Charge, line: ChargeLine, at: datetime) -> bool:
    """CREDITS §3.11 SPEC §9 step 2: flat iff `trunc(invoice_at) ≤ X`; usage iff the quantity is set,
    the service end `≤ X` and `trunc(invoice_at) ≤ X`."""
    if trunc(line.invoice_at) > at:
        return False
    if charge.is_flat:
        return True
    return line.quantity is not None and trunc(line.service_period.end) <= at


class ChargeEngine:
    """Applies charge patches and time-driven transitions to loaded charges, deciding every row write.

    `new_id(prefix)` gives `chg_…`, `crun_…`, `il_…` ids; `ledgers` are the customer's, by currency (needed
    only when credit moves); `gathering_invoice_id` is the live gathering invoice of the charges' currency,
    or None (the store finds or creates it for new lines)."""

    def __init__(
        self,
        *,
        customer_id: str,
        now: datetime,
        new_id: Callable[[str], str],
        ledgers: Mapping[str, Ledger] | None = None,
        gathering_invoice_id: str | None = None,
        existing_issues: Iterable[IssueKey] = (),
        customer_deleted_at: datetime | None = None,
    ) -> None:
        self.customer_id = customer_id
        self.now = now
        self.new_id = new_id
        self.ledgers = dict(ledgers or {})
        self.gathering_invoice_id = gathering_invoice_id
        self.customer_deleted_at = customer_deleted_at
        self.seen_issues: set[IssueKey] = set(existing_issues)
        self.changes = ChargeChanges()

    # -- helpers ---------------------------------------------------------------------------------
    def _ledger(self, currency: str) -> Ledger:
        ledger = self.ledgers.get(currency)
        if ledger is None:
            raise DomainError(f"credit ledger of {currency} not loaded")
        return ledger

    def _write_charge(self, charge: Charge, *, changed: bool = True) -> Charge:
        if not changed:
            return charge
        if charge.id in self.changes.new_charges:
            self.changes.new_charges[charge.id] = charge
        else:
            self.changes.charge_writes[charge.id] = charge
        return charge

    def _write_run(self, run: ChargeRun) -> None:
        if run.id in self.changes.new_runs:
            self.changes.new_runs[run.id] = run
        else:
            self.changes.run_writes[run.id] = run

    def _write_line(self, line: ChargeLine, charge: Charge) -> None:
        if line.id in self.changes.new_lines:
            self.changes.new_lines[line.id] = NewChargeLine(line, charge)
        else:
            self.changes.line_writes[line.id] = line
        if line.invoice_id is not None:
            self.changes.touched_invoices.add(line.invoice_id)

    def _delete_line(self, line: ChargeLine) -> None:
        self.changes.line_deletes.append(line.id)
        self.changes.new_lines.pop(line.id, None)
        self.changes.line_writes.pop(line.id, None)
        if line.invoice_id is not None:
            self.changes.touched_invoices.add(line.invoice_id)

    def _new_line(self, charge: Charge) -> ChargeLine:
        """The charge's gathering line (CREDITS §3.11): flat with `A` and `D`; usage without a quantity."""
        flat = charge.is_flat
        line = ChargeLine(
            id=self.new_id("il"),
            charge_id=charge.id,
            invoice_id=self.gathering_invoice_id,
            service_period=charge.service_period,
            billing_period=charge.billing_period,
            invoice_at=charge.invoice_at,
            price=charge.line_price(),
            amount=charge.amount if flat else None,
            discounts_total=charge.discounts_total if flat else None,
        )
        self.changes.new_lines[line.id] = NewChargeLine(line, charge)
        return line

    @staticmethod
    def _created(charge: Charge) -> Charge:
        return replace(charge, status="created", advance_after=charge.start_at)

    def _settle_advance_after(self, charge: Charge) -> Charge:
        """After any shrink or extend: `created` waits for `start_at`, credit_only flat `active` for `booked_at`."""
        if charge.status == "created":
            return replace(charge, advance_after=charge.start_at)
        if charge.status == "active" and charge.credit_only and charge.is_flat:
            return replace(charge, advance_after=charge.booked_at)
        return charge

    def _record(self, before: Charge, after: Charge, run_id: str | None) -> None:
        if before.status != after.status or run_id is not None:
            self.changes.status_changes.append(
                StatusChange(after.id, after.identity, before.status, after.status, run_id)
            )

    # -- sync: apply the plan (CREDITS §3.7 steps 2-3) --------------------------------------------
    def apply_plan(self, patches: Iterable[ChargePatch]) -> ChargeChanges:
        for patch in patches:
            if isinstance(patch, ChargeCreate):
                self.create(patch.target)
            elif isinstance(patch, ChargeUpdate):
                self.update(patch)
            else:
                self.delete(patch)
        return self.changes

    def create(self, target: ChargeTarget) -> Charge:
        """CREDITS §3.2 creation checks, then the charge row (`created`) and, for credit_then_invoice, its
        gathering line unless flat with `A = 0`."""
        end = target.service_period.end
        if self.customer_deleted_at is not None and end > self.customer_deleted_at:
            raise PlanningError(
                f"{target.identity}: cannot create a charge ending {format_instant(end)}, after the customer was "
                f"deleted ({format_instant(self.customer_deleted_at)})"
            )
        if target.type == "usage_based" and not target.feature_key:
            raise PlanningError(f"{target.identity}: a usage-based charge needs the rate card's feature_key")
        charge = self._created(
            Charge(
                id=self.new_id("chg"),
                customer_id=self.customer_id,
                subscription_id=target.subscription_id,
                phase_id=target.phase_id,
                item_id=target.item_id,
                identity=target.identity,
                type=target.type,
                settlement_mode=target.settlement_mode,
                status="created",
                currency=target.currency,
                name=target.name,
                description=target.description,
                feature_key=target.feature_key,
                price=target.price,
                discounts=target.discounts,
                tax_config=target.tax_config,
                annotations=target.annotations,
                pro_rating_enabled=target.pro_rating_enabled,
                pro_rating_mode=target.pro_rating_mode,
                service_period=target.service_period.truncated(),
                full_service_period=target.full_service_period.truncated(),
                billing_period=target.billing_period.truncated(),
                invoice_at=trunc(target.invoice_at),
                amount_before_proration=target.amount_before_proration,
                amount_after_proration=target.amount_after_proration,
            )
        )
        self.changes.new_charges[charge.id] = charge
        if not charge.credit_only and not (charge.is_flat and charge.amount == 0):
            self._new_line(charge)
        self.changes.patches.append(
            ChargePrintedPatch("charge_create", charge.identity, "create", charge.service_period, charge.id)
        )
        return charge

    def update(self, patch: ChargeUpdate) -> None:
        """Shrink / extend: write the four fields, re-rate, then act by the charge's realization (§3.7 table)."""
        item, target = patch.item, patch.target
        before = item.charge
        c = replace(
            before,
            service_period=Period(before.service_period.start, trunc(target.service_period.end)),
            full_service_period=Period(before.full_service_period.start, trunc(target.full_service_period.end)),
            billing_period=Period(before.billing_period.start, trunc(target.billing_period.end)),
            invoice_at=trunc(target.invoice_at),
        )
        if c.is_flat:
            assert c.amount_before_proration is not None
            c = replace(
                c,
                amount_after_proration=flat_charge_amount(
                    c.amount_before_proration,
                    c.service_period,
                    c.full_service_period,
                    c.pro_rating_enabled,
                    c.pro_rating_mode,
                    c.currency,
                ),
            )
        op: ChargeOp = "charge_shrink" if patch.reason == "shrink" else "charge_extend"
        self.changes.patches.append(ChargePrintedPatch(op, c.identity, patch.reason, c.service_period, c.id))
        run, line = item.run, item.line
        if run is not None and item.run_immutable:
            self._immutable_issue(item, c, patch.reason)
        elif run is None:
            c = self._update_unrealized(c, line)
        elif c.credit_only:
            c = self._update_booked(c, run)
        else:
            c = self._update_on_draft(c, run, line)
        c = self._settle_advance_after(c)
        self._write_charge(c)
        self._record(before, c, None)

    def _update_unrealized(self, c: Charge, line: ChargeLine | None) -> Charge:
        if c.credit_only:
            return c
        if c.is_flat:
            a = c.amount or ZERO
            if a > 0 and line is not None:
                self._write_line(self._rewritten_line(c, line, keep_invoice_at=False), c)
            elif a > 0:
                self._new_line(c)
                c = self._created(c)
            elif line is not None:
                self._delete_line(line)
                c = self._created(c)
            return c
        if line is None:
            self._new_line(c)
            return c
        if c.quantity is not None:
            c = replace(c, quantity=None, rated_amount=None)
            line = replace(line, quantity=None, amount=None, discounts_total=None)
        self._write_line(self._rewritten_line(c, line, keep_invoice_at=False), c)
        return c

    def _rewritten_line(self, c: Charge, line: ChargeLine, *, keep_invoice_at: bool) -> ChargeLine:
        flat = c.is_flat
        return replace(
            line,
            service_period=c.service_period,
            billing_period=c.billing_period if not keep_invoice_at else line.billing_period,
            invoice_at=line.invoice_at if keep_invoice_at else c.invoice_at,
            price=c.line_price(),
            amount=c.amount if flat else line.amount,
            discounts_total=c.discounts_total if flat else line.discounts_total,
        )

    def _update_booked(self, c: Charge, run: ChargeRun) -> Charge:
        ledger = self._ledger(c.currency)
        if c.is_flat:
            a = c.amount or ZERO
            d = discount_total(a, c.discounts, c.currency)
            credits = ledger.reconcile(c.credit_view(), run.id, a - d, exact=True)
            self._write_run(
                replace(
                    run,
                    amount=a,
                    discounts_total=d,
                    service_period=c.service_period,
                    credits_total=credits,
                    total=ZERO,
                )
            )
            return c
        self._undo_run(c, run, ledger)
        return self._created(replace(c, quantity=None, rated_amount=None))

    def _update_on_draft(self, c: Charge, run: ChargeRun, line: ChargeLine | None) -> Charge:
        ledger = self._ledger(c.currency)
        if c.is_flat and (c.amount or ZERO) > 0:
            a = c.amount or ZERO
            d = discount_total(a, c.discounts, c.currency)
            credits = ledger.reconcile(c.credit_view(), run.id, a - d, exact=False)
            total = a - d - credits
            self._write_run(
                replace(
                    run,
                    amount=a,
                    discounts_total=d,
                    service_period=c.service_period,
                    credits_total=credits,
                    total=total,
                )
            )
            if line is not None:
                rewritten = self._rewritten_line(c, line, keep_invoice_at=True)
                self._write_line(replace(rewritten, credits_total=credits, total=total), c)
            return c
        self._undo_run(c, run, ledger)
        if line is not None:
            self._delete_line(line)
        c = self._created(replace(c, quantity=None, rated_amount=None) if not c.is_flat else c)
        if not c.is_flat:
            self._new_line(c)
        return c

    def _undo_run(self, c: Charge, run: ChargeRun, ledger: Ledger) -> None:
        """Correct all the run's credits and delete it (CREDITS §3.7)."""
        ledger.correct_all(c.credit_view(), run.id)
        self._write_run(replace(run, credits_total=ZERO, deleted_at=self.now))

    def delete(self, patch: ChargeDelete) -> None:
        item = patch.item
        before = item.charge
        run, line = item.run, item.line
        self.changes.patches.append(
            ChargePrintedPatch("charge_delete", before.identity, "delete", before.service_period, before.id)
        )
        if run is not None and item.run_immutable:
            self._immutable_issue(item, before, "delete")
        elif run is not None:
            self._undo_run(before, run, self._ledger(before.currency))
            if line is not None:
                self._delete_line(line)
        elif line is not None:
            self._delete_line(line)
        c = replace(before, status="deleted", deleted_at=self.now, advance_after=None)
        self._write_charge(c)
        self._record(before, c, None)

    def _immutable_issue(self, item: ChargeItem, c: Charge, reason: str) -> None:
        """CREDITS §3.13: one SPEC §6.4 issue on the run's invoice when the change is visible."""
        run = item.run
        assert run is not None and run.invoice_id is not None
        line_period = item.line.service_period if item.line is not None else run.service_period
        period_changed = c.service_period.truncated() != line_period.truncated()
        if reason == "delete":
            message: str | None = "line should be deleted, but the invoice is immutable"
        elif c.is_flat:
            a = c.amount or ZERO
            if a != run.amount:
                message = (
                    "flat fee line's per unit amount cannot be changed on immutable invoice "
                    f"(new per unit amount: {format_decimal(a)})"
                )
            elif period_changed:
                message = "flat fee line's service period cannot be changed on immutable invoice"
            else:
                message = None
        elif period_changed:
            message = (
                "usage based line's service period cannot be changed on immutable invoice "
                f"(new period: {format_instant(c.service_period.start)} - {format_instant(c.service_period.end)})"
            )
        else:
            message = None
        if message is None:
            return
        issue = NewIssue(run.invoice_id, "warning", message, f"lines/{run.line_id}")
        if issue.key in self.seen_issues:
            return
        self.seen_issues.add(issue.key)
        self.changes.issues.append(issue)
        self.changes.patches.append(
            ChargePrintedPatch(
                "validation_issue", c.identity, reason, c.service_period, c.id, run.line_id, run.invoice_id
            )
        )

    # -- advance (CREDITS §3.6 time-driven transitions, §3.10) ------------------------------------
    def advance(self, item: ChargeItem) -> Charge:
        """Apply the due time-driven transitions of one charge at `now`; a false condition leaves it as it is."""
        before = c = item.charge
        if c.deleted_at is not None or c.advance_after is None or c.advance_after > self.now:
            return c
        run_id = None
        if c.status == "created" and self.now >= c.start_at:
            if not c.credit_only and c.is_flat and c.amount == 0:
                c = replace(c, status="final", advance_after=None)
            elif c.credit_only and c.is_flat:
                c = replace(c, status="active", advance_after=c.booked_at)
            else:
                c = replace(c, status="active", advance_after=None)
        if c.status == "active" and c.credit_only and c.is_flat and self.now >= c.booked_at:
            c, run_id = self._book(c)
        self._write_charge(c, changed=c != before)
        self._record(before, c, run_id)
        return c

    def _book(self, c: Charge) -> tuple[Charge, str]:
        """Booking (CREDITS §3.10): the live run, exact allocation of `N` (advance for the shortfall), `final`."""
        a = c.amount or ZERO
        d = discount_total(a, c.discounts, c.currency)
        run = ChargeRun(
            id=self.new_id("crun"),
            charge_id=c.id,
            customer_id=c.customer_id,
            currency=c.currency,
            service_period=c.service_period,
            quantity=None if c.is_flat else c.quantity,
            amount=a,
            discounts_total=d,
            credits_total=a - d,
            total=ZERO,
            invoice_id=None,
            line_id=None,
            booked_at=c.booked_at,
        )
        self._ledger(c.currency).allocate(c.credit_view(), run.id, a - d, exact=True)
        self.changes.new_runs[run.id] = run
        return replace(c, status="final", advance_after=None), run.id

    # -- set-quantity (CREDITS §3.12) ------------------------------------------------------------
    def set_quantity(self, item: ChargeItem, quantity: Decimal) -> Charge:
        """Rate and realize a usage charge whose service period has ended; the same quantity is a no-op."""
        before = c = item.charge
        if c.deleted_at is not None:
            raise ChargeError(f"charge {c.id}: is deleted")
        if c.is_flat:
            raise ChargeError(f"charge {c.id}: is a flat fee charge; a quantity can be set only on a usage-based one")
        if quantity < 0:
            raise ChargeError(f"charge {c.id}: quantity must not be negative")
        if c.quantity is not None:
            if c.quantity == quantity:
                return c
            raise ChargeError(f"charge {c.id}: quantity already set to {format_decimal(c.quantity)}")
        if c.service_period.end > self.now:
            raise ChargeError(
                f"charge {c.id}: its service period ends at {format_instant(c.service_period.end)}; "
                "a quantity can be set only after that"
            )
        assert isinstance(c.price, UsagePrice)
        rated = rate_usage(c.price.spec, quantity, c.discounts, c.currency)
        c = replace(c, quantity=quantity, rated_amount=rated)
        run_id = None
        if c.credit_only:
            c, run_id = self._book(c)
        else:
            line = item.line or self._new_line(c)
            d = discount_total(rated, c.discounts, c.currency)
            self._write_line(replace(line, quantity=quantity, amount=rated, discounts_total=d), c)
        self._write_charge(c)
        self._record(before, c, run_id)
        return c

    # -- invoicing (CREDITS §3.11) ---------------------------------------------------------------
    def invoice(self, item: ChargeItem, invoice_id: str) -> ChargeRun:
        """After the charge's line moved onto draft `invoice_id`: the run, credits allocated (not exact),
        `credits_total` and `total` on run and line; the charge becomes `active`."""
        before = c = item.charge
        line = item.line
        if c.credit_only or line is None:
            raise ChargeError(f"charge {c.id}: has no line to invoice")
        if item.run is not None:
            raise ChargeError(f"charge {c.id}: already has a live run ({item.run.id})")
        a = c.amount
        if a is None:
            raise ChargeError(f"charge {c.id}: its quantity is not set")
        d = discount_total(a, c.discounts, c.currency)
        run_id = self.new_id("crun")
        credits = self._ledger(c.currency).allocate(c.credit_view(), run_id, a - d, exact=False)
        run = ChargeRun(
            id=run_id,
            charge_id=c.id,
            customer_id=c.customer_id,
            currency=c.currency,
            service_period=c.service_period,
            quantity=None if c.is_flat else c.quantity,
            amount=a,
            discounts_total=d,
            credits_total=credits,
            total=a - d - credits,
            invoice_id=invoice_id,
            line_id=line.id,
            booked_at=c.booked_at,
        )
        self.changes.new_runs[run.id] = run
        self._write_line(
            replace(line, invoice_id=invoice_id, amount=a, discounts_total=d, credits_total=credits, total=run.total), c
        )
        c = replace(c, status="active", advance_after=None)
        self._write_charge(c)
        self._record(before, c, run.id)
        return run

    def invoice_status_changed(self, item: ChargeItem, immutable: bool) -> Charge:
        """`invoices set-status` on the run's invoice: `final` when it becomes immutable, `active` on draft."""
        before = c = item.charge
        if item.run is None or c.deleted_at is not None:
            return c
        c = replace(c, status="final" if immutable else "active", advance_after=None)
        self._write_charge(c, changed=c != before)
        self._record(before, c, None)
        return c
