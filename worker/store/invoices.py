"""Standard invoices for people: move one through its statuses, list a customer's invoices."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from worker.errors import NotFoundError, SubsyncError
from worker.store.locks import lock_customer
from worker.store.tables import invoice_validation_issues, invoices

SETTABLE_STATUSES = ("draft", "issued", "paid", "voided")


class InvalidStatusChange(SubsyncError):
    """The invoice cannot take that status (a gathering or deleted invoice, an unknown status)."""


def set_invoice_status(conn: Connection, namespace: str, invoice_id: str, status: str, now: datetime) -> Any:
    """Move a standard invoice to `status`; `immutable` follows (false only for `draft`)."""
    if status not in SETTABLE_STATUSES:
        raise InvalidStatusChange(f"status: must be one of {', '.join(SETTABLE_STATUSES)} (got {status!r})")
    row = conn.execute(
        select(invoices.c.customer_id).where(invoices.c.namespace == namespace, invoices.c.id == invoice_id)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"invoice {invoice_id!r} not found in namespace {namespace!r}")
    lock_customer(conn, namespace, row.customer_id)
    current = conn.execute(
        select(invoices).where(invoices.c.namespace == namespace, invoices.c.id == invoice_id).with_for_update()
    ).one()
    if current.type != "standard":
        raise InvalidStatusChange(
            f"invoice {invoice_id} is a {current.type} invoice; only standard invoices change status"
        )
    if current.deleted_at is not None:
        raise InvalidStatusChange(f"invoice {invoice_id} is deleted")
    return conn.execute(
        update(invoices)
        .where(invoices.c.namespace == namespace, invoices.c.id == invoice_id)
        .values(status=status, immutable=status != "draft", updated_at=now)
        .returning(invoices)
    ).one()


def list_invoices(conn: Connection, namespace: str, customer_id: str) -> list[tuple[Any, list[Any]]]:
    """The customer's invoices, newest first, each with its live validation issues."""
    rows = conn.execute(
        select(invoices)
        .where(invoices.c.namespace == namespace, invoices.c.customer_id == customer_id)
        .order_by(invoices.c.created_at.desc(), invoices.c.id.desc())
    ).all()
    v = invoice_validation_issues
    issues = (
        conn.execute(
            select(v)
            .where(v.c.namespace == namespace, v.c.invoice_id.in_([r.id for r in rows]), v.c.deleted_at.is_(None))
            .order_by(v.c.created_at, v.c.id)
        ).all()
        if rows
        else []
    )
    by_invoice: dict[str, list[Any]] = {}
    for issue in issues:
        by_invoice.setdefault(issue.invoice_id, []).append(issue)
    return [(r, by_invoice.get(r.id, [])) for r in rows]
