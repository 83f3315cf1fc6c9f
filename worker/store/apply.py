"""Writing a resolved plan (docs/sync.md §6) with batched statements: one per kind of write, whatever the
number of rows. Runs inside the caller's transaction, under the customer lock.

Statements are built once, at import (building a SQLAlchemy construct costs 60-130 µs a call; see
`worker.store.view`), and take arrays, so each is one execution on the server."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    Connection,
    Text,
    and_,
    any_,
    bindparam,
    case,
    exists,
    insert,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import TIMESTAMP

from worker.domain.target import TargetLine
from worker.domain.timeutil import trunc
from worker.domain.updater import Changes, NewIssue, NewLine
from worker.errors import ConcurrentWriteError
from worker.infra.ids import new_id
from worker.store.db import execute_on_cursor, json_dumps, json_str, json_str_or_null, json_time
from worker.store.tables import invoice_lines, invoice_validation_issues, invoices, split_line_groups

_TS_ARRAY = ARRAY(TIMESTAMP(timezone=True))
_TEXT_ARRAY = ARRAY(Text)


class GatheringInvoiceConflict(ConcurrentWriteError):
    """Another writer created the gathering invoice without holding the customer lock."""


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


def insert_validation_issues(conn: Connection, namespace: str, issues: Sequence[NewIssue], now: datetime) -> None:
    """Validation issues on immutable invoices (docs/sync.md §6.4), one statement for all of them; the
    charge engine's issues (docs/credits.md §3.13) go through here too."""
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
            for i in issues
        ],
    )


def apply_changes(
    conn: Connection, namespace: str, changes: Changes, now: datetime, *, delete_emptied: bool = True
) -> None:
    """docs/sync.md §6.3-§6.5 in order: creates, updates, deletes, issues, group deletes and updates, then
    emptied invoices are deleted (`delete_emptied=False`: the caller does it once, after the charges,
    docs/credits.md §3.7 step 4)."""
    if changes.new_lines:
        _insert_lines(conn, namespace, changes, now)
    if changes.line_writes:
        _update_lines(conn, namespace, changes, now)
    if changes.line_deletes:
        execute_on_cursor(conn, _DELETE_LINES, {"ns": namespace, "ids": changes.line_deletes, "now": now}, rows=False)
    if changes.issues:
        insert_validation_issues(conn, namespace, changes.issues, now)
    if changes.group_deletes:
        execute_on_cursor(conn, _DELETE_GROUPS, {"ns": namespace, "ids": changes.group_deletes, "now": now}, rows=False)
    if changes.group_updates:
        _update_groups(conn, namespace, changes, now)
    if delete_emptied and changes.touched_invoices:
        delete_emptied_invoices(conn, namespace, sorted(changes.touched_invoices), now)


# New lines are inserted with one INSERT … SELECT FROM jsonb_to_recordset(one JSON parameter): one
# execution on the server. Writing the 10,000 lines of a first sync (bench/) took 560 ms with an
# executemany of the rows (psycopg pipelines them, but the server runs one INSERT per line) and 670 ms
# with unnest() of 18 arrays (psycopg escapes every array element in Python); it takes ~400 ms this
# way, ~280 ms of which is Postgres inserting and indexing the rows.
# A JSON `null` comes out of the recordset as SQL NULL: COALESCE keeps the JSON `null` that SQLAlchemy's
# JSONB type writes for `None` (discounts, tax_config).
_INSERT_LINES = text(
    """
    INSERT INTO invoice_lines (namespace, id, invoice_id, currency, name, description, managed_by,
        unique_reference_id, split_line_group_id, subscription_id, subscription_phase_id, subscription_item_id,
        billing_period_start, billing_period_end, service_period_start, service_period_end, invoice_at,
        price, feature_key, discounts, tax_config, annotations, quantity, created_at, updated_at)
    SELECT :namespace, v.id, v.invoice_id, v.currency, v.name, v.description, 'subscription',
        v.unique_reference_id, NULL, v.subscription_id, v.phase_id, v.item_id,
        v.billing_start, v.billing_end, v.service_start, v.service_end, v.invoice_at,
        v.price, v.feature_key, COALESCE(v.discounts, 'null'), COALESCE(v.tax_config, 'null'), '{}', NULL,
        :now, :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        id text, invoice_id text, currency text, name text, description text, unique_reference_id text,
        subscription_id text, phase_id text, item_id text, billing_start timestamptz, billing_end timestamptz,
        service_start timestamptz, service_end timestamptz, invoice_at timestamptz, price jsonb,
        feature_key text, discounts jsonb, tax_config jsonb)
    """
)


def _line_shared(t: TargetLine) -> dict[str, Any]:
    """The fields of a new line's row it shares with every line of its item version (`new_line_rows_json` encodes
    them once)."""
    return {
        "currency": t.currency,
        "name": t.name,
        "description": t.description,
        "subscription_id": t.subscription_id,
        "phase_id": t.phase_id,
        "item_id": t.item_id,
        "feature_key": t.feature_key,
        "discounts": dict(t.discounts) if t.discounts is not None else None,
        "tax_config": t.tax_config,
    }


def new_line_rows_json(new_lines: Iterable[NewLine]) -> str:
    """The new lines' rows (docs/sync.md §6.2: fields of §3.9, times truncated) as one JSON array, built as text as
    `worker.store.charge_write.charge_rows_json` builds charges' (docs/performance.md "Charge rows as JSON text"):
    the fields a line shares with its item version's other lines encoded once per write, each distinct price object
    once, the others formatted into the row. `tests/store/test_rows_json.py` checks it against the rows as
    dictionaries encoded by `json_dumps`."""
    heads: dict[tuple[Any, ...], str] = {}
    prices: dict[int, str] = {}
    rows = []
    for new in new_lines:
        t = new.target
        # The mappings and prices by identity: every line of the write holds them, so no id is reused meanwhile.
        key = (
            t.currency,
            t.name,
            t.description,
            t.subscription_id,
            t.phase_id,
            t.item_id,
            t.feature_key,
            id(t.discounts),
            id(t.tax_config),
        )
        head = heads.get(key)
        if head is None:
            head = heads[key] = json_dumps(_line_shared(t))[:-1]  # without the closing brace
        price = prices.get(id(t.price))
        if price is None:
            price = prices[id(t.price)] = json_dumps(t.price.to_json())
        rows.append(
            f'{head},"id":{json_str(new.id)},"invoice_id":{json_str_or_null(new.invoice_id)},'
            f'"unique_reference_id":{json_str(t.identity)},'
            f'"billing_start":{json_time(t.billing_period.start)},"billing_end":{json_time(t.billing_period.end)},'
            f'"service_start":{json_time(t.service_period.start)},"service_end":{json_time(t.service_period.end)},'
            f'"invoice_at":{json_time(t.invoice_at)},"price":{price}}}'
        )
    return "[" + ",".join(rows) + "]"


def _insert_lines(conn: Connection, namespace: str, changes: Changes, now: datetime) -> None:
    """docs/sync.md §6.2: every new line on its gathering invoice, fields of §3.9, times truncated."""
    rows = new_line_rows_json(changes.new_lines)
    execute_on_cursor(conn, _INSERT_LINES, {"namespace": namespace, "now": now, "rows": rows}, rows=False)


_DELETE_LINES = (
    update(invoice_lines)
    .where(
        invoice_lines.c.namespace == bindparam("ns"),  # "namespace" is reserved for the SET clause
        invoice_lines.c.id == any_(bindparam("ids", type_=_TEXT_ARRAY)),
    )
    .values(deleted_at=bindparam("now"), updated_at=bindparam("now"))
)
_DELETE_GROUPS = (
    update(split_line_groups)
    .where(
        split_line_groups.c.namespace == bindparam("ns"),
        split_line_groups.c.id == any_(bindparam("ids", type_=_TEXT_ARRAY)),
    )
    .values(deleted_at=bindparam("now"), updated_at=bindparam("now"))
)


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
        invoice_id = COALESCE(v.move_to, l.invoice_id),
        updated_at = :now
    FROM unnest(:ids, :service_starts, :service_ends, :invoice_ats, :billing_starts, :billing_ends, :prices,
                :resurrects, :move_tos)
        AS v(id, service_start, service_end, invoice_at, billing_start, billing_end, price, resurrect, move_to)
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
    bindparam("move_tos", type_=_TEXT_ARRAY),
)


def _update_lines(conn: Connection, namespace: str, changes: Changes, now: datetime) -> None:
    """One UPDATE … FROM unnest(arrays) for every line write; times stored truncated (docs/sync.md §6.3)."""
    writes = changes.line_writes
    execute_on_cursor(
        conn,
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
            "move_tos": [w.move_to_invoice_id for w in writes],
        },
        rows=False,
    )


_UPDATE_GROUPS = text(
    """
    UPDATE split_line_groups AS g SET service_period_end = v.service_end, updated_at = :now
    FROM unnest(:ids, :service_ends) AS v(id, service_end)
    WHERE g.namespace = :namespace AND g.id = v.id
    """
).bindparams(bindparam("ids", type_=_TEXT_ARRAY), bindparam("service_ends", type_=_TS_ARRAY))


def _update_groups(conn: Connection, namespace: str, changes: Changes, now: datetime) -> None:
    execute_on_cursor(
        conn,
        _UPDATE_GROUPS,
        {
            "namespace": namespace,
            "now": now,
            "ids": [gid for gid, _ in changes.group_updates],
            "service_ends": [trunc(period.end) for _, period in changes.group_updates],
        },
        rows=False,
    )


_i, _l = invoices, invoice_lines
_standard = _i.c.type == "standard"
_DELETE_EMPTIED_INVOICES = (
    update(_i)
    .where(
        _i.c.namespace == bindparam("ns"),
        _i.c.id == any_(bindparam("ids", type_=_TEXT_ARRAY)),
        _i.c.deleted_at.is_(None),
        _i.c.immutable.is_(False),
        ~exists().where(and_(_l.c.namespace == _i.c.namespace, _l.c.invoice_id == _i.c.id, _l.c.deleted_at.is_(None))),
    )
    .values(
        deleted_at=bindparam("now"),
        updated_at=bindparam("now"),
        status=case((_standard, "deleted"), else_=_i.c.status),
        immutable=case((_standard, True), else_=_i.c.immutable),
    )
)


def delete_emptied_invoices(conn: Connection, namespace: str, invoice_ids: Sequence[str], now: datetime) -> None:
    """docs/sync.md §6.3: a gathering invoice left without live lines is soft-deleted; a draft one is deleted
    (`status = 'deleted'`, immutable)."""
    execute_on_cursor(
        conn, _DELETE_EMPTIED_INVOICES, {"ns": namespace, "ids": list(invoice_ids), "now": now}, rows=False
    )
