"""Reading one stored line, with its invoice and split line group, for `subsync explain line` (docs/sync.md
§10.1). Read-only; no lock (an explanation is a snapshot, never a write)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from worker.domain.explain import GroupFacts, InvoiceFacts, StoredLine
from worker.domain.timeutil import Period, trunc
from worker.errors import NotFoundError
from worker.store.lines import lines_with_invoice_and_group
from worker.store.tables import invoice_lines, invoice_validation_issues, invoices


def load_line(conn: Connection, namespace: str, line_id: str) -> tuple[StoredLine, Any]:
    """The line (deleted ones too) as the explanation compares it, and its raw row (with `invoice_*` and
    `group_*` columns, the shape of `worker.store.lines.list_lines`). NotFoundError when there is none."""
    l = invoice_lines  # noqa: E741
    row = conn.execute(
        lines_with_invoice_and_group(invoices.c.deleted_at.label("invoice_deleted_at")).where(
            l.c.namespace == namespace, l.c.id == line_id
        )
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"line {line_id!r} not found in namespace {namespace!r}")
    group = None
    if row.split_line_group_id is not None:
        siblings = conn.execute(
            select(l.c.id)
            .where(l.c.namespace == namespace, l.c.split_line_group_id == row.split_line_group_id, l.c.id != line_id)
            .order_by(l.c.service_period_start, l.c.id)
        ).scalars()
        group = GroupFacts(
            row.split_line_group_id,
            row.group_unique_reference_id,
            Period(trunc(row.group_service_period_start), trunc(row.group_service_period_end)),
            tuple(siblings),
        )
    price = row.price or {}
    amount = Decimal(str(price["amount"])) if price.get("type") == "flat" and "amount" in price else None
    stored = StoredLine(
        id=row.id,
        identity=row.unique_reference_id if group is None else group.identity,
        subscription_id=row.subscription_id,
        managed_by=row.managed_by,
        deleted=row.deleted_at is not None,
        annotations=row.annotations or {},
        service_period=Period(trunc(row.service_period_start), trunc(row.service_period_end)),
        invoice_at=trunc(row.invoice_at),
        amount=amount,
        invoice=InvoiceFacts(
            row.invoice_id,
            row.invoice_type,
            row.invoice_status,
            row.invoice_immutable,
            row.invoice_deleted_at is not None,
        ),
        group=group,
        charge_id=row.charge_id,
    )
    return stored, row


def line_issues(conn: Connection, namespace: str, invoice_id: str, line_id: str) -> list[dict[str, Any]]:
    """The live validation issues sync recorded on the line's invoice for this line (docs/sync.md §6.4)."""
    v = invoice_validation_issues.c
    rows = conn.execute(
        select(v.severity, v.code, v.message, v.created_at)
        .where(
            v.namespace == namespace,
            v.invoice_id == invoice_id,
            v.path == f"lines/{line_id}",
            v.deleted_at.is_(None),
        )
        .order_by(v.created_at, v.id)
    )
    return [{"severity": r.severity, "code": r.code, "message": r.message} for r in rows]
