"""What the charge engine decides (docs/credits.md §3.6-§3.13): the printed charge patches (docs/credits.md §2.6), the
status changes (docs/credits.md §2.4), and the row writes collected in a `ChargeChanges` for the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from worker.domain.charges.items import Charge, ChargeLine, ChargeRun, ChargeStatus
from worker.domain.records import value
from worker.domain.timeutil import Period
from worker.domain.updater import NewIssue

ChargeOp = Literal["charge_create", "charge_shrink", "charge_extend", "charge_delete", "validation_issue"]


@value
class ChargePrintedPatch:
    """A printed charge patch (docs/credits.md §2.6); `line_id`/`invoice_id` are set only on `validation_issue`."""

    op: ChargeOp
    unique_reference_id: str
    reason: str
    service_period: Period
    charge_id: str | None
    line_id: str | None = None
    invoice_id: str | None = None
    group_id: None = None  # the printed shape of docs/contract.md §6 has it; a charge patch never names a group


@value
class NewChargeLine:
    line: ChargeLine
    charge: Charge


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One charge moved on by advance, `set-quantity`, invoicing or `set-status` (docs/credits.md §2.4 `changes`)."""

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
    (the ledgers' `new_rows`), issues, then the docs/sync.md §6.3 emptied-invoice rules for `touched_invoices`."""

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
