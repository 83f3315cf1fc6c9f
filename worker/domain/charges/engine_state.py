"""The charge engine's working state (docs/credits.md §3): the charges, runs, lines and ledgers it was given,
and the row writes it decides, collected in a `ChargeChanges`. `engine_patches` applies a sync's patches on
it and `engine` adds the time-driven transitions; `ChargeEngine` (worker.domain.charges.engine) is the whole.

Pure: the engine reads no clock (`now` is given), generates ids through the `new_id` it is given, and takes
credit through the `Ledger`s it is given (worker.domain.credit_allocation). Every entry point computes in
`money.exact_context` (docs/contract.md §3 "arithmetic"): `N = A − D` and `total` never round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from worker.domain.charges.changes import (
    ChargeChanges,
    NewChargeLine,
    StatusChange,
)
from worker.domain.charges.items import Charge, ChargeLine, ChargeRun
from worker.domain.credit_allocation import Ledger
from worker.domain.errors import DomainError
from worker.domain.persisted import IssueKey
from worker.domain.timeutil import trunc

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


class EngineState:
    """The working state of a `ChargeEngine` and the row writes it decides (docs/credits.md §3.6, §3.7).

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
