"""The charge engine of docs/credits.md §3: the state machine (§3.6), the effects of a sync's patches (§3.7),
booking (§3.10), invoicing (§3.11), `set-quantity` (§3.12) and immutable invoices (§3.13).

Pure: the engine reads no clock (`now` is given), generates ids through the `new_id` it is given, and takes
credit through the `Ledger`s it is given (worker.domain.credit_allocation). What it decides is collected in
a `ChargeChanges` for the store to write, one statement per kind of write; the ledgers hold the new
allocation rows. Every entry point computes in `money.exact_context` (docs/contract.md §3 "arithmetic"):
`N = A − D` and `total` never round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from worker.domain.charges.amounts import ZERO, discount_total, flat_charge_amount, rate_usage
from worker.domain.charges.changes import (
    ChargeChanges,
    ChargeOp,
    ChargePrintedPatch,
    NewChargeLine,
    StatusChange,
)
from worker.domain.charges.diff import ChargeCreate, ChargeDelete, ChargePatch, ChargeUpdate
from worker.domain.charges.items import Charge, ChargeItem, ChargeLine, ChargeRun
from worker.domain.charges.targets import ChargeTarget
from worker.domain.credit_allocation import Ledger
from worker.domain.errors import DomainError, PlanningError
from worker.domain.money import exact, format_decimal
from worker.domain.persisted import IssueKey
from worker.domain.prices import UsagePrice
from worker.domain.timeutil import Period, format_instant, trunc
from worker.domain.updater import NewIssue

# --- the engine (docs/credits.md §3.6, §3.7, §3.10-§3.13) -------------------------------------------------


class ChargeError(DomainError):
    """A charge command refused for the state of the charge (docs/credits.md §2.3 exit 1), naming the charge."""


def is_invoiceable(charge: Charge, line: ChargeLine, at: datetime) -> bool:
    """docs/credits.md §3.11 docs/sync.md §9 step 2: flat iff `trunc(invoice_at) ≤ X`; usage iff the quantity is set,
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
        """The charge's gathering line (docs/credits.md §3.11): flat with `A` and `D`; usage without a quantity."""
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

    # -- sync: apply the plan (docs/credits.md §3.7 steps 2-3) --------------------------------------------
    @exact
    def apply_plan(self, patches: Iterable[ChargePatch]) -> ChargeChanges:
        for patch in patches:
            if isinstance(patch, ChargeCreate):
                self.create(patch.target)
            elif isinstance(patch, ChargeUpdate):
                self.update(patch)
            else:
                self.delete(patch)
        return self.changes

    @exact
    def create(self, target: ChargeTarget) -> Charge:
        """docs/credits.md §3.2 creation checks, then the charge row (`created`) and, for credit_then_invoice, its
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

    @exact
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
        """Correct all the run's credits and delete it (docs/credits.md §3.7)."""
        ledger.correct_all(c.credit_view(), run.id)
        self._write_run(replace(run, credits_total=ZERO, deleted_at=self.now))

    @exact
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
        """docs/credits.md §3.13: one docs/sync.md §6.4 issue on the run's invoice when the change is visible."""
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

    # -- advance (docs/credits.md §3.6 time-driven transitions, §3.10) ------------------------------------
    def advance_all(self, items: Iterable[ChargeItem]) -> list[Charge]:
        """One advance step at `now`: the due charges served in booking-time order (`Charge.advance_order_key`), so
        that one step at `t` writes what stepping through every earlier due time and then `t` writes."""
        return [self.advance(item) for item in sorted(items, key=lambda i: i.charge.advance_order_key())]

    @exact
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
        """Booking (docs/credits.md §3.10): the live run, exact allocation of `N` (advance for the shortfall), `final`."""
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

    # -- set-quantity (docs/credits.md §3.12) ------------------------------------------------------------
    @exact
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

    # -- invoicing (docs/credits.md §3.11) ---------------------------------------------------------------
    @exact
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

    @exact
    def invoice_status_changed(self, item: ChargeItem, immutable: bool) -> Charge:
        """`invoices set-status` on the run's invoice: `final` when it becomes immutable, `active` on draft."""
        before = c = item.charge
        if item.run is None or c.deleted_at is not None:
            return c
        c = replace(c, status="final" if immutable else "active", advance_after=None)
        self._write_charge(c, changed=c != before)
        self._record(before, c, None)
        return c
