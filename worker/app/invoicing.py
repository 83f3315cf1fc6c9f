"""The invoicing use case (docs/sync.md §9): move what is due onto new draft invoices, under the customer lock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine

from worker.app.charges import invoice_charges
from worker.domain.invoicing import InvoicingPlan, plan_invoicing
from worker.infra.clock import utcnow
from worker.infra.ids import new_id
from worker.infra.logging import get_logger
from worker.store.db import run_transaction
from worker.store.invoicing import apply_invoicing, load_pending_lines
from worker.store.locks import lock_customer

log = get_logger("worker.app.invoicing")


@dataclass(frozen=True, slots=True)
class CreatedInvoice:
    id: str
    currency: str
    status: str
    line_ids: tuple[str, ...]


def invoice_pending_lines(
    engine: Engine,
    namespace: str,
    customer_id: str,
    *,
    as_of: datetime | None = None,
    progressive: bool = False,
    now: datetime | None = None,
) -> list[CreatedInvoice]:
    """Invoice the customer's pending lines as of `as_of` (default now); an empty list when nothing is due.

    Publishing `invoice.created` for the result is the caller's business (after this commit)."""
    now = now or utcnow()
    x = as_of or now

    def invoice(conn: Connection) -> InvoicingPlan:
        return invoice_in_transaction(conn, namespace, customer_id, x, progressive=progressive, now=now)

    plan = run_transaction(engine, invoice)  # a stale pooled connection is replaced once
    if plan.is_empty:
        return []
    created = [CreatedInvoice(inv.id, inv.currency, "draft", inv.line_ids) for inv in plan.invoices]
    log.info(
        "invoicing.done",
        namespace=namespace,
        customer_id=customer_id,
        as_of=x.isoformat(),
        invoices=[c.id for c in created],
        lines=sum(len(c.line_ids) for c in created),
        splits=len(plan.splits),
    )
    return created


def invoice_in_transaction(
    conn: Connection, namespace: str, customer_id: str, x: datetime, *, progressive: bool, now: datetime
) -> InvoicingPlan:
    """docs/sync.md §9 steps 1-5 as of `x` in the caller's transaction, under the customer lock (taken here)."""
    lock_customer(conn, namespace, customer_id)
    lines = load_pending_lines(conn, namespace, customer_id)
    plan = plan_invoicing(lines, x, progressive=progressive, new_id=new_id)
    if not plan.is_empty:
        apply_invoicing(conn, namespace, customer_id, plan, now)
        charge_lines = {line.id: line.charge_id for line in lines if line.charge_id is not None}
        moved = {
            charge_lines[line_id]: inv.id
            for inv in plan.invoices
            for line_id in inv.line_ids
            if line_id in charge_lines
        }
        if moved:
            invoice_charges(conn, namespace, customer_id, moved, now)  # docs/credits.md §3.11 step 2
    return plan
