"""Loading a customer's pending gathering lines and writing an invoicing plan (docs/sync.md §9), batched."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ARRAY, Connection, Text, and_, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import TIMESTAMP

from worker.domain.invoicing import InvoicingPlan, PendingLine
from worker.domain.prices import price_from_json
from worker.domain.timeutil import Period, trunc
from worker.store.apply import delete_emptied_invoices
from worker.store.tables import invoice_lines, invoices

_TEXT_ARRAY = ARRAY(Text)
_TS_ARRAY = ARRAY(TIMESTAMP(timezone=True))


def load_pending_lines(conn: Connection, namespace: str, customer_id: str) -> list[PendingLine]:
    """Live lines of the customer's live gathering invoices (every currency, every subscription)."""
    l, i = invoice_lines, invoices  # noqa: E741
    rows = conn.execute(
        select(
            l.c.id,
            l.c.invoice_id,
            l.c.currency,
            l.c.price,
            l.c.service_period_start,
            l.c.service_period_end,
            l.c.invoice_at,
            l.c.split_line_group_id,
            l.c.charge_id,
            l.c.quantity,
        )
        .select_from(l.join(i, and_(i.c.namespace == l.c.namespace, i.c.id == l.c.invoice_id)))
        .where(
            i.c.namespace == namespace,
            i.c.customer_id == customer_id,
            i.c.type == "gathering",
            i.c.deleted_at.is_(None),
            l.c.deleted_at.is_(None),
        )
    ).all()
    return [
        PendingLine(
            r.id,
            r.invoice_id,
            r.currency,
            price_from_json(r.price),
            Period(r.service_period_start, r.service_period_end).truncated(),
            trunc(r.invoice_at),
            r.split_line_group_id,
            r.charge_id,
            None if r.quantity is None else Decimal(r.quantity),
        )
        for r in rows
    ]


_INSERT_GROUPS = text(
    """
    INSERT INTO split_line_groups (namespace, id, currency, name, description, unique_reference_id,
        subscription_id, subscription_phase_id, subscription_item_id, billing_period_start, billing_period_end,
        service_period_start, service_period_end, price, feature_key, discounts, tax_config, created_at, updated_at)
    SELECT l.namespace, v.group_id, l.currency, l.name, l.description, l.unique_reference_id,
        l.subscription_id, l.subscription_phase_id, l.subscription_item_id, l.billing_period_start,
        l.billing_period_end, date_trunc('second', l.service_period_start), date_trunc('second', l.service_period_end),
        l.price, l.feature_key, l.discounts, l.tax_config, :now, :now
    FROM unnest(:line_ids, :group_ids) AS v(line_id, group_id)
    JOIN invoice_lines l ON l.namespace = :namespace AND l.id = v.line_id
    """
).bindparams(bindparam("line_ids", type_=_TEXT_ARRAY), bindparam("group_ids", type_=_TEXT_ARRAY))

_INSERT_POST_SPLIT = text(
    """
    INSERT INTO invoice_lines (namespace, id, invoice_id, currency, name, description, managed_by,
        unique_reference_id, split_line_group_id, subscription_id, subscription_phase_id, subscription_item_id,
        billing_period_start, billing_period_end, service_period_start, service_period_end, invoice_at,
        price, feature_key, discounts, tax_config, annotations, quantity, created_at, updated_at)
    SELECT l.namespace, v.new_id, l.invoice_id, l.currency, l.name, l.description, l.managed_by,
        NULL, v.group_id, l.subscription_id, l.subscription_phase_id, l.subscription_item_id,
        l.billing_period_start, l.billing_period_end, v.at, date_trunc('second', l.service_period_end), l.invoice_at,
        l.price, l.feature_key, l.discounts, l.tax_config, l.annotations, l.quantity, :now, :now
    FROM unnest(:line_ids, :new_ids, :group_ids, :ats) AS v(line_id, new_id, group_id, at)
    JOIN invoice_lines l ON l.namespace = :namespace AND l.id = v.line_id
    """
).bindparams(
    bindparam("line_ids", type_=_TEXT_ARRAY),
    bindparam("new_ids", type_=_TEXT_ARRAY),
    bindparam("group_ids", type_=_TEXT_ARRAY),
    bindparam("ats", type_=_TS_ARRAY),
)

_CUT_PRE_SPLIT = text(
    """
    UPDATE invoice_lines AS l SET service_period_end = v.at, invoice_at = v.at, split_line_group_id = v.group_id,
        unique_reference_id = NULL, updated_at = :now
    FROM unnest(:line_ids, :group_ids, :ats) AS v(line_id, group_id, at)
    WHERE l.namespace = :namespace AND l.id = v.line_id
    """
).bindparams(
    bindparam("line_ids", type_=_TEXT_ARRAY),
    bindparam("group_ids", type_=_TEXT_ARRAY),
    bindparam("ats", type_=_TS_ARRAY),
)

_MOVE_LINES = text(
    """
    UPDATE invoice_lines AS l SET invoice_id = v.invoice_id, updated_at = :now
    FROM unnest(:line_ids, :invoice_ids) AS v(line_id, invoice_id)
    WHERE l.namespace = :namespace AND l.id = v.line_id
    """
).bindparams(bindparam("line_ids", type_=_TEXT_ARRAY), bindparam("invoice_ids", type_=_TEXT_ARRAY))


def apply_invoicing(conn: Connection, namespace: str, customer_id: str, plan: InvoicingPlan, now: datetime) -> None:
    """Groups first, then the post-split copies (from the uncut rows), then the cuts, the new invoices,
    the moves, and finally emptied gathering invoices are soft-deleted."""
    base = {"namespace": namespace, "now": now}
    new_groups = [s for s in plan.splits if s.new_group]
    if new_groups:
        conn.execute(
            _INSERT_GROUPS,
            {**base, "line_ids": [s.line_id for s in new_groups], "group_ids": [s.group_id for s in new_groups]},
        )
    posts = [s for s in plan.splits if s.post_line_id is not None]
    if posts:
        conn.execute(
            _INSERT_POST_SPLIT,
            {
                **base,
                "line_ids": [s.line_id for s in posts],
                "new_ids": [s.post_line_id for s in posts],
                "group_ids": [s.group_id for s in posts],
                "ats": [trunc(s.at) for s in posts],
            },
        )
    if plan.splits:
        conn.execute(
            _CUT_PRE_SPLIT,
            {
                **base,
                "line_ids": [s.line_id for s in plan.splits],
                "group_ids": [s.group_id for s in plan.splits],
                "ats": [trunc(s.at) for s in plan.splits],
            },
        )
    conn.execute(
        insert(invoices),
        [
            {
                "namespace": namespace,
                "id": inv.id,
                "customer_id": customer_id,
                "currency": inv.currency,
                "type": "standard",
                "status": "draft",
                "immutable": False,
                "number": f"INV-{inv.id.removeprefix('inv_')}",
                "created_at": now,
                "updated_at": now,
            }
            for inv in plan.invoices
        ],
    )
    moves = [(line_id, inv.id) for inv in plan.invoices for line_id in inv.line_ids]
    conn.execute(_MOVE_LINES, {**base, "line_ids": [m[0] for m in moves], "invoice_ids": [m[1] for m in moves]})
    delete_emptied_invoices(conn, namespace, plan.gathering_invoice_ids, now)
