"""Listing invoice lines for people and scripts (`subsync lines`, docs/contract.md §6)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, select

from worker.store.tables import invoice_lines, invoices, split_line_groups


def lines_with_invoice_and_group(*extra: ColumnElement[Any]) -> Select[Any]:
    """Lines joined to their invoice (`invoice_type`, `invoice_status`, `invoice_immutable`,
    `invoice_customer_id`) and, outer, to their split-line group (`group_*`), plus `extra` columns."""
    l, i, g = invoice_lines, invoices, split_line_groups  # noqa: E741
    return select(
        l,
        i.c.type.label("invoice_type"),
        i.c.status.label("invoice_status"),
        i.c.immutable.label("invoice_immutable"),
        i.c.customer_id.label("invoice_customer_id"),
        *extra,
        g.c.unique_reference_id.label("group_unique_reference_id"),
        g.c.service_period_start.label("group_service_period_start"),
        g.c.service_period_end.label("group_service_period_end"),
        g.c.deleted_at.label("group_deleted_at"),
    ).select_from(
        l.join(i, and_(i.c.namespace == l.c.namespace, i.c.id == l.c.invoice_id)).outerjoin(
            g, and_(g.c.namespace == l.c.namespace, g.c.id == l.c.split_line_group_id)
        )
    )


def list_lines(
    conn: Connection,
    namespace: str,
    *,
    customer_id: str | None = None,
    subscription_id: str | None = None,
    include_deleted: bool = False,
) -> list[Any]:
    """Lines of a customer (through their invoices) or of a subscription, ordered by service period
    start, then unique reference id, then id; each row carries its invoice's `invoice_type`,
    `invoice_status`, `invoice_immutable` and its group's `group_*` columns (null for a plain line)."""
    if (customer_id is None) == (subscription_id is None):
        raise ValueError("give exactly one of customer_id and subscription_id")
    l, i = invoice_lines, invoices  # noqa: E741
    query = (
        lines_with_invoice_and_group()
        .where(l.c.namespace == namespace)
        .order_by(l.c.service_period_start, l.c.unique_reference_id.asc().nulls_last(), l.c.id)
    )
    if customer_id is not None:
        query = query.where(i.c.customer_id == customer_id)
    else:
        query = query.where(l.c.subscription_id == subscription_id)
    if not include_deleted:
        query = query.where(l.c.deleted_at.is_(None))
    return list(conn.execute(query).all())
