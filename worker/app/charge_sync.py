"""The charge part of a sync (docs/credits.md §3.3-§3.7): plan the charge patches, run them through the charge engine
(taking credit from the ledgers they need), and write them after the line patches, then the emptied-invoice
rules once for lines and charges. Runs in the sync's transaction, under its customer lock.

Statements per sync are constant in the number of charges: one load (always), the ledger (two, only when a
patch touches a charge with a mutable run), existing issues (one, only when a patch touches a charge on an
immutable invoice), and one write per kind of row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import Connection

from worker.domain.charges import (
    ChargeChanges,
    ChargeCreate,
    ChargeEngine,
    ChargeItem,
    ChargePrintedPatch,
    ChargeTarget,
    plan_charges,
)
from worker.domain.credit_allocation import Ledger
from worker.infra.ids import new_id
from worker.store.apply import delete_emptied_invoices, get_or_create_gathering_invoice
from worker.store.charges import load_issue_keys, write_charge_changes
from worker.store.credits import load_ledger


@dataclass(slots=True)
class ChargeStep:
    """What the engine decided for one sync, and the ledgers holding the new allocation rows."""

    changes: ChargeChanges = field(default_factory=ChargeChanges)
    ledgers: list[Ledger] = field(default_factory=list)

    def printed(self, *, dry_run: bool) -> tuple[ChargePrintedPatch, ...]:
        """docs/credits.md §2.6: the charge patches in apply order; a dry run prints `charge_id` null for creates."""
        if not dry_run:
            return tuple(self.changes.patches)
        return tuple(replace(p, charge_id=None) if p.op == "charge_create" else p for p in self.changes.patches)


def new_allocation_id() -> str:
    return new_id("cal")


def ledgers_for(
    conn: Connection, namespace: str, customer_id: str, runs_by_currency: Mapping[str, Iterable[str]]
) -> dict[str, Ledger]:
    """The customer's ledger per currency, holding the rows of the given runs (docs/credits.md §3.3: allocation rows
    are read only for the charges a step touches)."""
    out: dict[str, Ledger] = {}
    for currency, run_ids in sorted(runs_by_currency.items()):
        out[currency], _ = load_ledger(
            conn, namespace, customer_id, currency, run_ids=sorted(set(run_ids)), new_id=new_allocation_id
        )
    return out


def plan_charge_step(
    conn: Connection,
    namespace: str,
    customer_id: str,
    items: Mapping[str, ChargeItem],
    targets: Iterable[ChargeTarget],
    *,
    now: datetime,
    gathering_invoice_id: str | None,
    customer_deleted_at: datetime | None,
) -> ChargeStep:
    """docs/credits.md §3.4 diff, then the engine's effects of each patch (docs/credits.md §3.7 steps 2-3), nothing written."""
    patches = plan_charges(targets, items)
    if not patches:
        return ChargeStep()
    runs: dict[str, list[str]] = {}
    immutable_invoices: set[str] = set()
    for patch in patches:
        if isinstance(patch, ChargeCreate) or patch.item.run is None:
            continue
        if patch.item.run_immutable:
            assert patch.item.run.invoice_id is not None
            immutable_invoices.add(patch.item.run.invoice_id)
        else:
            runs.setdefault(patch.item.charge.currency, []).append(patch.item.run.id)
    ledgers = ledgers_for(conn, namespace, customer_id, runs) if runs else {}
    engine = ChargeEngine(
        customer_id=customer_id,
        now=now,
        new_id=new_id,
        ledgers=ledgers,
        gathering_invoice_id=gathering_invoice_id,
        existing_issues=load_issue_keys(conn, namespace, immutable_invoices),
        customer_deleted_at=customer_deleted_at,
    )
    return ChargeStep(engine.apply_plan(patches), list(ledgers.values()))


def write_charge_step(
    conn: Connection,
    namespace: str,
    customer_id: str,
    currency: str,
    step: ChargeStep,
    now: datetime,
    *,
    gathering_invoice_id: str | None,
    line_touched_invoices: Iterable[str],
) -> None:
    """docs/credits.md §3.7 steps 2-4 after the line patches: the charge writes (new charge lines on the customer's
    gathering invoice, found or created), then the docs/sync.md §6.3 emptied-invoice rules once for every invoice
    touched by lines or charges."""
    changes = step.changes
    if any(new.line.invoice_id is None for new in changes.new_lines.values()) and gathering_invoice_id is None:
        gathering_invoice_id = get_or_create_gathering_invoice(conn, namespace, customer_id, currency, now)
    if not changes.is_empty:
        write_charge_changes(
            conn,
            namespace,
            customer_id,
            changes,
            step.ledgers,
            now,
            gathering_invoice_id=gathering_invoice_id,
            delete_emptied=False,
        )
    touched = set(line_touched_invoices) | changes.touched_invoices
    if touched:
        delete_emptied_invoices(conn, namespace, sorted(touched), now)
