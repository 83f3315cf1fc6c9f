"""Loading the persisted state of one subscription (SPEC §4) in a constant number of queries:
its lines and group children (one query), its live groups (one), the invoices those rows reference
(one), and the existing sync issues of the immutable ones among them (one, only when there are any)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, or_, select, union_all

from worker.domain.persisted import (
    Invoice,
    IssueKey,
    PersistedGroup,
    PersistedLine,
    PersistedState,
    build_persisted_state,
)
from worker.domain.prices import price_from_json
from worker.domain.timeutil import Period
from worker.domain.updater import COMPONENT
from worker.store.tables import invoice_lines, invoice_validation_issues, invoices, split_line_groups


class MissingInvoiceError(LookupError):
    """A loaded line references an invoice that does not exist."""


_LINE_COLUMNS = (
    invoice_lines.c.id,
    invoice_lines.c.invoice_id,
    invoice_lines.c.managed_by,
    invoice_lines.c.unique_reference_id,
    invoice_lines.c.split_line_group_id,
    invoice_lines.c.annotations,
    invoice_lines.c.service_period_start,
    invoice_lines.c.service_period_end,
    invoice_lines.c.billing_period_start,
    invoice_lines.c.billing_period_end,
    invoice_lines.c.invoice_at,
    invoice_lines.c.price,
    invoice_lines.c.deleted_at,
)


def load_persisted(conn: Connection, namespace: str, subscription_id: str) -> PersistedState:
    groups = conn.execute(
        select(
            split_line_groups.c.id,
            split_line_groups.c.unique_reference_id,
            split_line_groups.c.service_period_start,
            split_line_groups.c.service_period_end,
        ).where(
            split_line_groups.c.namespace == namespace,
            split_line_groups.c.subscription_id == subscription_id,
            split_line_groups.c.deleted_at.is_(None),
        )
    ).all()
    lines = _load_lines(conn, namespace, subscription_id, [g.id for g in groups])
    plain = [line for line in lines if line.split_line_group_id is None]
    children: dict[str, list[PersistedLine]] = {g.id: [] for g in groups}
    for line in lines:
        if line.split_line_group_id in children:
            children[line.split_line_group_id].append(line)
    persisted_groups = [
        PersistedGroup(
            g.id,
            g.unique_reference_id,
            Period(g.service_period_start, g.service_period_end),
            tuple(children[g.id]),
        )
        for g in groups
    ]
    invoice_rows = _load_invoices(conn, namespace, {line.invoice_id for line in lines})
    issues = _load_issues(conn, namespace, [i.id for i in invoice_rows if i.immutable])
    return build_persisted_state(plain, persisted_groups, invoice_rows, issues)


def _load_lines(
    conn: Connection, namespace: str, subscription_id: str, group_ids: Sequence[str]
) -> list[PersistedLine]:
    l = invoice_lines  # noqa: E741
    own = select(*_LINE_COLUMNS).where(
        l.c.namespace == namespace,
        l.c.subscription_id == subscription_id,
        l.c.split_line_group_id.is_(None),
        or_(l.c.deleted_at.is_(None), l.c.managed_by == "manual"),
    )
    if group_ids:
        kids = select(*_LINE_COLUMNS).where(l.c.namespace == namespace, l.c.split_line_group_id.in_(group_ids))
        rows = conn.execute(union_all(own, kids)).all()
    else:
        rows = conn.execute(own).all()
    return [_line(row) for row in rows]


def _line(row: Row[Any]) -> PersistedLine:
    return PersistedLine(
        id=row.id,
        invoice_id=row.invoice_id,
        managed_by=row.managed_by,
        unique_reference_id=row.unique_reference_id,
        split_line_group_id=row.split_line_group_id,
        annotations=row.annotations or {},
        service_period=Period(row.service_period_start, row.service_period_end),
        billing_period=Period(
            row.billing_period_start or row.service_period_start, row.billing_period_end or row.service_period_end
        ),
        invoice_at=row.invoice_at,
        price=price_from_json(row.price),
        deleted=row.deleted_at is not None,
    )


def _load_invoices(conn: Connection, namespace: str, ids: set[str]) -> list[Invoice]:
    if not ids:
        return []
    rows = conn.execute(
        select(invoices.c.id, invoices.c.type, invoices.c.status, invoices.c.immutable, invoices.c.deleted_at).where(
            invoices.c.namespace == namespace, invoices.c.id.in_(sorted(ids))
        )
    ).all()
    found = [Invoice(r.id, r.type, r.status, r.immutable, r.deleted_at is not None) for r in rows]
    missing = ids - {i.id for i in found}
    if missing:
        raise MissingInvoiceError(f"invoice lines reference missing invoice(s): {', '.join(sorted(missing))}")
    return found


def _load_issues(conn: Connection, namespace: str, invoice_ids: list[str]) -> list[IssueKey]:
    if not invoice_ids:
        return []
    v = invoice_validation_issues
    rows = conn.execute(
        select(v.c.invoice_id, v.c.path, v.c.component, v.c.code, v.c.message).where(
            and_(
                v.c.namespace == namespace,
                v.c.invoice_id.in_(invoice_ids),
                v.c.component == COMPONENT,
                v.c.deleted_at.is_(None),
            )
        )
    ).all()
    return [IssueKey(r.invoice_id, r.path or "", r.component, r.code, r.message) for r in rows]
