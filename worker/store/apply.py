"""Writing a resolved plan (SPEC §6) with batched statements: one per kind of write, whatever the
number of rows. Runs inside the caller's transaction, under the customer lock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Boolean, Connection, Text, and_, bindparam, case, exists, insert, select, text, update
from sqlalchemy.dialects.postgresql import TIMESTAMP

from worker.domain.timeutil import trunc
from worker.domain.updater import Changes, NewLine
from worker.ids import new_id
from worker.store.tables import invoice_lines, invoice_validation_issues, invoices, split_line_groups

_TS_ARRAY = ARRAY(TIMESTAMP(timezone=True))
_TEXT_ARRAY = ARRAY(Text)


class GatheringInvoiceConflict(RuntimeError):
    """Another writer created the gathering invoice without holding the customer lock."""


def find_gathering_invoice(conn: Connection, namespace: str, customer_id: str, currency: str) -> str | None:
    return conn.execute(
        select(invoices.c.id).where(
            invoices.c.namespace == namespace,
            invoices.c.customer_id == customer_id,
            invoices.c.currency == currency,
            invoices.c.type == "gathering",
            invoices.c.deleted_at.is_(None),
        )
    ).scalar_one_or_none()


_GET_OR_CREATE_GATHERING = text(
    """
    WITH existing AS (
        SELECT id FROM invoices
        WHERE namespace = :namespace AND customer_id = :customer_id AND currency = :currency
          AND type = 'gathering' AND deleted_at IS NULL
    ), created AS (
        INSERT INTO invoices (namespace, id, customer_id, currency, type, status, immutable, number,
                              created_at, updated_at)
        SELECT :namespace, :id, :customer_id, :currency, 'gathering', 'gathering', false, :number, :now, :now
        WHERE NOT EXISTS (SELECT 1 FROM existing)
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT id FROM existing UNION ALL SELECT id FROM created
    """
)


def get_or_create_gathering_invoice(
    conn: Connection, namespace: str, customer_id: str, currency: str, now: datetime
) -> str:
    """The customer's live gathering invoice for `currency`, created when missing (one statement)."""
    invoice_id = new_id("inv")
    found = conn.execute(
        _GET_OR_CREATE_GATHERING,
        {
            "namespace": namespace,
            "customer_id": customer_id,
            "currency": currency,
            "id": invoice_id,
            "number": f"GATHER-{currency}-{invoice_id[-8:]}",
            "now": now,
        },
    ).scalar_one_or_none()
    if found is None:
        raise GatheringInvoiceConflict(
            f"gathering invoice of customer {customer_id!r} ({currency}) was created concurrently; retry"
        )
    return str(found)


def apply_changes(conn: Connection, namespace: str, changes: Changes, now: datetime) -> None:
    """SPEC §6.3-§6.5 in order: creates, updates, deletes, issues, group deletes and updates, then
    emptied invoices are deleted."""
    if changes.new_lines:
        conn.execute(insert(invoice_lines), [_new_line_row(namespace, n, now) for n in changes.new_lines])
    if changes.line_writes:
        _update_lines(conn, namespace, changes, now)
    if changes.line_deletes:
        conn.execute(
            update(invoice_lines)
            .where(invoice_lines.c.namespace == namespace, invoice_lines.c.id.in_(changes.line_deletes))
            .values(deleted_at=now, updated_at=now)
        )
    if changes.issues:
        conn.execute(
            insert(invoice_validation_issues),
            [
                {
                    "namespace": namespace,
                    "id": new_id("vi"),
                    "invoice_id": i.invoice_id,
                    "severity": i.severity,
                    "code": i.code,
                    "component": i.component,
                    "message": i.message,
                    "path": i.path,
                    "created_at": now,
                }
                for i in changes.issues
            ],
        )
    if changes.group_deletes:
        conn.execute(
            update(split_line_groups)
            .where(split_line_groups.c.namespace == namespace, split_line_groups.c.id.in_(changes.group_deletes))
            .values(deleted_at=now, updated_at=now)
        )
    if changes.group_updates:
        _update_groups(conn, namespace, changes, now)
    if changes.touched_invoices:
        delete_emptied_invoices(conn, namespace, sorted(changes.touched_invoices), now)


def _new_line_row(namespace: str, new: NewLine, now: datetime) -> dict[str, Any]:
    t = new.target
    return {
        "namespace": namespace,
        "id": new.id,
        "invoice_id": new.invoice_id,
        "currency": t.currency,
        "name": t.name,
        "description": t.description,
        "managed_by": "subscription",
        "unique_reference_id": t.identity,
        "split_line_group_id": None,
        "subscription_id": t.subscription_id,
        "subscription_phase_id": t.phase_id,
        "subscription_item_id": t.item_id,
        "billing_period_start": trunc(t.billing_period.start),
        "billing_period_end": trunc(t.billing_period.end),
        "service_period_start": trunc(t.service_period.start),
        "service_period_end": trunc(t.service_period.end),
        "invoice_at": trunc(t.invoice_at),
        "price": t.price.to_json(),
        "feature_key": t.feature_key,
        "discounts": dict(t.discounts) if t.discounts is not None else None,
        "tax_config": t.tax_config,
        "annotations": {},
        "quantity": None,
        "created_at": now,
        "updated_at": now,
    }


_UPDATE_LINES = text(
    """
    UPDATE invoice_lines AS l SET
        service_period_start = v.service_start,
        service_period_end = v.service_end,
        invoice_at = v.invoice_at,
        billing_period_start = v.billing_start,
        billing_period_end = v.billing_end,
        price = COALESCE(v.price::jsonb, l.price),
        deleted_at = CASE WHEN v.resurrect THEN NULL ELSE l.deleted_at END,
        updated_at = :now
    FROM unnest(:ids, :service_starts, :service_ends, :invoice_ats, :billing_starts, :billing_ends, :prices,
                :resurrects)
        AS v(id, service_start, service_end, invoice_at, billing_start, billing_end, price, resurrect)
    WHERE l.namespace = :namespace AND l.id = v.id
    """
).bindparams(
    bindparam("ids", type_=_TEXT_ARRAY),
    bindparam("service_starts", type_=_TS_ARRAY),
    bindparam("service_ends", type_=_TS_ARRAY),
    bindparam("invoice_ats", type_=_TS_ARRAY),
    bindparam("billing_starts", type_=_TS_ARRAY),
    bindparam("billing_ends", type_=_TS_ARRAY),
    bindparam("prices", type_=_TEXT_ARRAY),
    bindparam("resurrects", type_=ARRAY(Boolean)),
)


def _update_lines(conn: Connection, namespace: str, changes: Changes, now: datetime) -> None:
    """One UPDATE … FROM unnest(arrays) for every line write; times stored truncated (SPEC §6.3)."""
    writes = changes.line_writes
    conn.execute(
        _UPDATE_LINES,
        {
            "namespace": namespace,
            "now": now,
            "ids": [w.line_id for w in writes],
            "service_starts": [trunc(w.service_period.start) for w in writes],
            "service_ends": [trunc(w.service_period.end) for w in writes],
            "invoice_ats": [trunc(w.invoice_at) for w in writes],
            "billing_starts": [trunc(w.billing_period.start) for w in writes],
            "billing_ends": [trunc(w.billing_period.end) for w in writes],
            "prices": [json.dumps(w.price.to_json()) if w.price is not None else None for w in writes],
            "resurrects": [w.resurrect for w in writes],
        },
    )


_UPDATE_GROUPS = text(
    """
    UPDATE split_line_groups AS g SET service_period_end = v.service_end, updated_at = :now
    FROM unnest(:ids, :service_ends) AS v(id, service_end)
    WHERE g.namespace = :namespace AND g.id = v.id
    """
).bindparams(bindparam("ids", type_=_TEXT_ARRAY), bindparam("service_ends", type_=_TS_ARRAY))


def _update_groups(conn: Connection, namespace: str, changes: Changes, now: datetime) -> None:
    conn.execute(
        _UPDATE_GROUPS,
        {
            "namespace": namespace,
            "now": now,
            "ids": [gid for gid, _ in changes.group_updates],
            "service_ends": [trunc(period.end) for _, period in changes.group_updates],
        },
    )


def delete_emptied_invoices(conn: Connection, namespace: str, invoice_ids: Sequence[str], now: datetime) -> None:
    """SPEC §6.3: a gathering invoice left without live lines is soft-deleted; a draft one is deleted
    (`status = 'deleted'`, immutable)."""
    i, l = invoices, invoice_lines  # noqa: E741
    standard = i.c.type == "standard"
    conn.execute(
        update(i)
        .where(
            i.c.namespace == namespace,
            i.c.id.in_(list(invoice_ids)),
            i.c.deleted_at.is_(None),
            i.c.immutable.is_(False),
            ~exists().where(and_(l.c.namespace == i.c.namespace, l.c.invoice_id == i.c.id, l.c.deleted_at.is_(None))),
        )
        .values(
            deleted_at=now,
            updated_at=now,
            status=case((standard, "deleted"), else_=i.c.status),
            immutable=case((standard, True), else_=i.c.immutable),
        )
    )
