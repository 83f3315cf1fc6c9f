"""The charge engine of docs/credits.md §3: the state machine (§3.6), the effects of a sync's patches (§3.7,
`engine_patches`), booking (§3.10), invoicing (§3.11), `set-quantity` (§3.12) and immutable invoices (§3.13).
Its working state and row writes are in `engine_state`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal

from worker.domain.charges.amounts import ZERO, discount_total, rate_usage
from worker.domain.charges.engine_patches import PatchingEngine
from worker.domain.charges.engine_state import ChargeError, is_invoiceable
from worker.domain.charges.items import Charge, ChargeItem, ChargeRun
from worker.domain.money import exact, format_decimal
from worker.domain.prices import UsagePrice
from worker.domain.timeutil import format_instant

__all__ = ["ChargeEngine", "ChargeError", "is_invoiceable"]


class ChargeEngine(PatchingEngine):
    """Applies charge patches and time-driven transitions to loaded charges, deciding every row write.

    `new_id(prefix)` gives `chg_…`, `crun_…`, `il_…` ids; `ledgers` are the customer's, by currency (needed
    only when credit moves); `gathering_invoice_id` is the live gathering invoice of the charges' currency,
    or None (the store finds or creates it for new lines)."""

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
