"""Lookups of the event handlers (docs/sync.md §8.2): which subscriptions have live lines on an invoice. Every query
is scoped by namespace. (A cancellation's `active_to` is read from the row the sync locks: worker.store.snapshot.)"""

from __future__ import annotations

from sqlalchemy import Connection, select

from worker.errors import MissingInvoiceError
from worker.infra.logging import get_logger
from worker.store.tables import invoice_lines, invoices, subscriptions

log = get_logger(__name__)


def subscriptions_on_invoice(conn: Connection, namespace: str, invoice_id: str) -> tuple[str | None, list[str]]:
    """The invoice's type and the distinct existing subscriptions with a live line on it.

    Raises MissingInvoiceError when the invoice does not exist in the namespace."""
    invoice = conn.execute(
        select(invoices.c.type).where(invoices.c.namespace == namespace, invoices.c.id == invoice_id)
    ).one_or_none()
    if invoice is None:
        raise MissingInvoiceError(f"invoice {invoice_id!r} not found in namespace {namespace!r}")
    if invoice.type == "gathering":
        return invoice.type, []
    on_lines = (
        select(invoice_lines.c.subscription_id)
        .where(
            invoice_lines.c.namespace == namespace,
            invoice_lines.c.invoice_id == invoice_id,
            invoice_lines.c.deleted_at.is_(None),
            invoice_lines.c.subscription_id.is_not(None),
        )
        .distinct()
    )
    referenced = sorted(str(v) for v in conn.execute(on_lines).scalars())
    existing: set[str] = set()
    if referenced:
        existing = {
            str(v)
            for v in conn.execute(
                select(subscriptions.c.id).where(
                    subscriptions.c.namespace == namespace, subscriptions.c.id.in_(referenced)
                )
            ).scalars()
        }
    missing = [s for s in referenced if s not in existing]
    if missing:
        log.warning("invoice lines reference unknown subscriptions", invoice_id=invoice_id, subscriptions=missing)
    return invoice.type, [s for s in referenced if s in existing]
