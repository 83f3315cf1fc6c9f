"""The effects of a sync's charge patches (docs/credits.md §3.7 steps 2-3): creation (§3.2), the state
machine's updates and deletes (§3.6), and validation issues on immutable invoices (§3.13)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from worker.domain.charges.amounts import ZERO, discount_total, flat_charge_amount
from worker.domain.charges.changes import (
    ChargeChanges,
    ChargeOp,
    ChargePrintedPatch,
)
from worker.domain.charges.diff import ChargeCreate, ChargeDelete, ChargePatch, ChargeUpdate
from worker.domain.charges.engine_state import EngineState
from worker.domain.charges.items import Charge, ChargeItem, ChargeLine, ChargeRun, start_at
from worker.domain.charges.targets import ChargeTarget
from worker.domain.credit_allocation import Ledger
from worker.domain.errors import PlanningError
from worker.domain.money import exact, format_decimal
from worker.domain.timeutil import Period, format_instant, trunc
from worker.domain.updater import NewIssue


class PatchingEngine(EngineState):
    """Applies a sync's charge patches (`apply_plan`), deciding every row write."""

    # -- sync: apply the plan (docs/credits.md §3.7 steps 2-3) --------------------------------------------
    @exact
    def apply_plan(self, patches: Iterable[ChargePatch]) -> ChargeChanges:
        for patch in patches:
            if isinstance(patch, ChargeCreate):
                self._create(patch.target)
            elif isinstance(patch, ChargeUpdate):
                self.update(patch)
            else:
                self.delete(patch)
        return self.changes

    def _create(self, target: ChargeTarget) -> Charge:
        """docs/credits.md §3.2 creation checks, then the charge row (`created`) and, for credit_then_invoice, its
        gathering line unless flat with `A = 0`. Called by `apply_plan` only, in its exact context (one
        `exact_context` per plan, not one more per charge: ~1 µs each)."""
        end = target.service_period.end
        if self.customer_deleted_at is not None and end > self.customer_deleted_at:
            raise PlanningError(
                f"{target.identity}: cannot create a charge ending {format_instant(end)}, after the customer was "
                f"deleted ({format_instant(self.customer_deleted_at)})"
            )
        if target.type == "usage_based" and not target.feature_key:
            raise PlanningError(f"{target.identity}: a usage-based charge needs the rate card's feature_key")
        service, invoice_at = target.service_period.truncated(), trunc(target.invoice_at)
        # Built `created` at once (`_created`'s rule through `start_at`): a `replace` afterwards cost ~5 µs a charge.
        # Positional, in `Charge`'s field order: 29 keyword arguments cost ~0.9 µs more a charge.
        charge = Charge(
            self.new_id("chg"),  # id
            self.customer_id,
            target.subscription_id,
            target.phase_id,
            target.item_id,
            target.identity,
            target.type,
            target.settlement_mode,
            "created",  # status
            target.currency,
            target.name,
            target.description,
            target.feature_key,
            target.price,
            target.discounts,
            target.tax_config,
            target.annotations,
            target.pro_rating_enabled,
            target.pro_rating_mode,
            service,  # service_period
            target.full_service_period.truncated(),
            target.billing_period.truncated(),
            invoice_at,
            target.amount_before_proration,
            target.amount_after_proration,
            None,  # quantity
            None,  # rated_amount
            start_at(target.type, invoice_at, service),  # advance_after
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
