"""Writing what the charge engine decided (docs/credits.md §3.7): a `ChargeChanges` written with one statement per kind
of write, whatever the number of charges (as worker.store.apply does for lines). Every statement is scoped by
namespace, reads no result (so a sync can pipeline them: worker.store.write) and runs in the caller's
transaction, under the customer lock (docs/credits.md §3.15)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import ARRAY, Connection, Text, any_, bindparam, text, update

from worker.domain.charges import Charge, ChargeChanges, ChargeLine, ChargeRun
from worker.domain.credit_allocation import AllocationRow
from worker.domain.money import format_decimal
from worker.store.apply import delete_emptied_invoices, insert_validation_issues
from worker.store.credits import insert_allocation_rows
from worker.store.db import execute_on_cursor, json_amount, json_dumps, json_str, json_time, time_text
from worker.store.tables import invoice_lines


class NewAllocationRows(Protocol):
    """New allocation rows of one currency: a `Ledger`, or a sync plan's rows (worker.store.write)."""

    @property
    def currency(self) -> str: ...

    @property
    def new_rows(self) -> Sequence[AllocationRow]: ...


def _ts(t: datetime | None) -> str | None:
    return None if t is None else time_text(t)


def _num(v: Decimal | None) -> str | None:
    return None if v is None else format_decimal(v)


_INSERT_CHARGES = text(
    """
    INSERT INTO charges (namespace, id, customer_id, subscription_id, subscription_phase_id, subscription_item_id,
        unique_reference_id, type, settlement_mode, status, currency, name, description, feature_key, price,
        discounts, tax_config, annotations, pro_rating_enabled, pro_rating_mode, service_period_start,
        service_period_end, full_service_period_start, full_service_period_end, billing_period_start,
        billing_period_end, invoice_at, amount_before_proration, amount_after_proration, quantity, rated_amount,
        advance_after, created_at, updated_at, deleted_at)
    SELECT :namespace, v.id, v.customer_id, v.subscription_id, v.phase_id, v.item_id, v.unique_reference_id, v.type,
        v.settlement_mode, v.status, v.currency, v.name, v.description, v.feature_key, v.price,
        COALESCE(v.discounts, 'null'), COALESCE(v.tax_config, 'null'), COALESCE(v.annotations, '{}'),
        v.pro_rating_enabled, v.pro_rating_mode, v.service_start, v.service_end, v.full_start, v.full_end,
        v.billing_start, v.billing_end, v.invoice_at, v.amount_before, v.amount_after, v.quantity, v.rated_amount,
        v.advance_after, :now, :now, v.deleted_at
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        id text, customer_id text, subscription_id text, phase_id text, item_id text, unique_reference_id text,
        type text, settlement_mode text, status text, currency text, name text, description text, feature_key text,
        price jsonb, discounts jsonb, tax_config jsonb, annotations jsonb, pro_rating_enabled boolean,
        pro_rating_mode text, service_start timestamptz, service_end timestamptz, full_start timestamptz,
        full_end timestamptz, billing_start timestamptz, billing_end timestamptz, invoice_at timestamptz,
        amount_before numeric, amount_after numeric, quantity numeric, rated_amount numeric,
        advance_after timestamptz, deleted_at timestamptz)
    """
)

# Sync changes only these fields of a charge (docs/credits.md §3.4: starts, price, names ... never change).
_UPDATE_CHARGES = text(
    """
    UPDATE charges AS c SET status = v.status, service_period_end = v.service_end,
        full_service_period_end = v.full_end, billing_period_end = v.billing_end, invoice_at = v.invoice_at,
        amount_after_proration = v.amount_after, quantity = v.quantity, rated_amount = v.rated_amount,
        advance_after = v.advance_after, deleted_at = v.deleted_at, updated_at = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id text, status text, service_end timestamptz,
        full_end timestamptz, billing_end timestamptz, invoice_at timestamptz, amount_after numeric,
        quantity numeric, rated_amount numeric, advance_after timestamptz, deleted_at timestamptz)
    WHERE c.namespace = :namespace AND c.id = v.id
    """
)

_INSERT_RUNS = text(
    """
    INSERT INTO charge_runs (namespace, id, charge_id, customer_id, currency, service_period_start,
        service_period_end, quantity, amount, discounts_total, credits_total, total, invoice_id, line_id, booked_at,
        created_at, updated_at, deleted_at)
    SELECT :namespace, v.id, v.charge_id, v.customer_id, v.currency, v.service_start, v.service_end, v.quantity,
        v.amount, v.discounts_total, v.credits_total, v.total, v.invoice_id, v.line_id, v.booked_at, :now, :now,
        v.deleted_at
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id text, charge_id text, customer_id text, currency text,
        service_start timestamptz, service_end timestamptz, quantity numeric, amount numeric,
        discounts_total numeric, credits_total numeric, total numeric, invoice_id text, line_id text,
        booked_at timestamptz, deleted_at timestamptz)
    """
)

_UPDATE_RUNS = text(
    """
    UPDATE charge_runs AS r SET service_period_start = v.service_start, service_period_end = v.service_end,
        quantity = v.quantity, amount = v.amount, discounts_total = v.discounts_total,
        credits_total = v.credits_total, total = v.total, deleted_at = v.deleted_at, updated_at = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id text, service_start timestamptz,
        service_end timestamptz, quantity numeric, amount numeric, discounts_total numeric, credits_total numeric,
        total numeric, deleted_at timestamptz)
    WHERE r.namespace = :namespace AND r.id = v.id
    """
)

_INSERT_LINES = text(
    """
    INSERT INTO invoice_lines (namespace, id, invoice_id, currency, name, description, managed_by,
        unique_reference_id, split_line_group_id, subscription_id, subscription_phase_id, subscription_item_id,
        billing_period_start, billing_period_end, service_period_start, service_period_end, invoice_at, price,
        feature_key, discounts, tax_config, annotations, quantity, created_at, updated_at, charge_id, amount,
        discounts_total, credits_total, total)
    SELECT :namespace, v.id, v.invoice_id, v.currency, v.name, v.description, 'system', NULL, NULL,
        v.subscription_id, v.phase_id, v.item_id, v.billing_start, v.billing_end, v.service_start, v.service_end,
        v.invoice_at, v.price, v.feature_key, COALESCE(v.discounts, 'null'), COALESCE(v.tax_config, 'null'), '{}',
        v.quantity, :now, :now, v.charge_id, v.amount, v.discounts_total, v.credits_total, v.total
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id text, invoice_id text, currency text, name text,
        description text, subscription_id text, phase_id text, item_id text, billing_start timestamptz,
        billing_end timestamptz, service_start timestamptz, service_end timestamptz, invoice_at timestamptz,
        price jsonb, feature_key text, discounts jsonb, tax_config jsonb, quantity numeric, charge_id text,
        amount numeric, discounts_total numeric, credits_total numeric, total numeric)
    """
)

_UPDATE_LINES = text(
    """
    UPDATE invoice_lines AS l SET invoice_id = v.invoice_id, service_period_start = v.service_start,
        service_period_end = v.service_end, billing_period_start = v.billing_start,
        billing_period_end = v.billing_end, invoice_at = v.invoice_at, price = v.price, quantity = v.quantity,
        amount = v.amount, discounts_total = v.discounts_total, credits_total = v.credits_total, total = v.total,
        updated_at = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id text, invoice_id text, service_start timestamptz,
        service_end timestamptz, billing_start timestamptz, billing_end timestamptz, invoice_at timestamptz,
        price jsonb, quantity numeric, amount numeric, discounts_total numeric, credits_total numeric,
        total numeric)
    WHERE l.namespace = :namespace AND l.id = v.id AND l.charge_id IS NOT NULL
    """
)

_DELETE_LINES = (
    update(invoice_lines)
    .where(
        invoice_lines.c.namespace == bindparam("ns"),
        invoice_lines.c.id == any_(bindparam("ids", type_=ARRAY(Text))),
        invoice_lines.c.charge_id.is_not(None),
    )
    .values(deleted_at=bindparam("now"), updated_at=bindparam("now"))
)


def _charge_shared(c: Charge) -> dict[str, Any]:
    """The fields of `c`'s row it shares with every charge of its item version (`charge_rows_json` encodes them once)."""
    return {
        "customer_id": c.customer_id,
        "subscription_id": c.subscription_id,
        "phase_id": c.phase_id,
        "item_id": c.item_id,
        "type": c.type,
        "settlement_mode": c.settlement_mode,
        "status": c.status,
        "currency": c.currency,
        "name": c.name,
        "description": c.description,
        "feature_key": c.feature_key,
        "price": c.price.to_json(),  # flat: the rate card amount as written (docs/credits.md §2.2)
        "discounts": dict(c.discounts) if c.discounts is not None else None,
        "tax_config": c.tax_config,
        "annotations": dict(c.annotations),
        "pro_rating_enabled": c.pro_rating_enabled,
        "pro_rating_mode": c.pro_rating_mode,
    }


def _charge_row(c: Charge) -> dict[str, Any]:
    return {
        "id": c.id,
        "unique_reference_id": c.identity,
        **_charge_shared(c),
        "service_start": _ts(c.service_period.start),
        "service_end": _ts(c.service_period.end),
        "full_start": _ts(c.full_service_period.start),
        "full_end": _ts(c.full_service_period.end),
        "billing_start": _ts(c.billing_period.start),
        "billing_end": _ts(c.billing_period.end),
        "invoice_at": _ts(c.invoice_at),
        "amount_before": _num(c.amount_before_proration),
        "amount_after": _num(c.amount_after_proration),
        "quantity": _num(c.quantity),
        "rated_amount": _num(c.rated_amount),
        "advance_after": _ts(c.advance_after),
        "deleted_at": _ts(c.deleted_at),
    }


def charge_rows_json(charges: Iterable[Charge]) -> str:
    """`json_dumps([_charge_row(c) for c in charges])`, the same JSON value built as text: the fields a charge shares
    with its item version's other charges (names, price, discounts, ...) are encoded once per write, the others
    formatted straight into the row (~3 µs a charge against ~13 for the dict and its encoding: docs/performance.md
    "Charge rows as JSON text"). `tests/store/test_rows_json.py` checks it against `_charge_row`."""
    heads: dict[tuple[Any, ...], str] = {}
    rows = []
    for c in charges:
        # The mappings and the price by identity: every charge of one write holds them, so no id is reused meanwhile.
        key = (
            c.customer_id,
            c.subscription_id,
            c.phase_id,
            c.item_id,
            c.type,
            c.settlement_mode,
            c.status,
            c.currency,
            c.name,
            c.description,
            c.feature_key,
            id(c.price),
            id(c.discounts),
            id(c.tax_config),
            id(c.annotations),
            c.pro_rating_enabled,
            c.pro_rating_mode,
        )
        head = heads.get(key)
        if head is None:
            head = heads[key] = json_dumps(_charge_shared(c))[:-1]  # without the closing brace
        rows.append(
            f'{head},"id":{json_str(c.id)},"unique_reference_id":{json_str(c.identity)},'
            f'"service_start":{json_time(c.service_period.start)},"service_end":{json_time(c.service_period.end)},'
            f'"full_start":{json_time(c.full_service_period.start)},"full_end":{json_time(c.full_service_period.end)},'
            f'"billing_start":{json_time(c.billing_period.start)},"billing_end":{json_time(c.billing_period.end)},'
            f'"invoice_at":{json_time(c.invoice_at)},"amount_before":{json_amount(c.amount_before_proration)},'
            f'"amount_after":{json_amount(c.amount_after_proration)},"quantity":{json_amount(c.quantity)},'
            f'"rated_amount":{json_amount(c.rated_amount)},"advance_after":{json_time(c.advance_after)},'
            f'"deleted_at":{json_time(c.deleted_at)}}}'
        )
    return "[" + ",".join(rows) + "]"


def _run_row(r: ChargeRun) -> dict[str, Any]:
    return {
        "id": r.id,
        "charge_id": r.charge_id,
        "customer_id": r.customer_id,
        "currency": r.currency,
        "service_start": _ts(r.service_period.start),
        "service_end": _ts(r.service_period.end),
        "quantity": _num(r.quantity),
        "amount": _num(r.amount),
        "discounts_total": _num(r.discounts_total),
        "credits_total": _num(r.credits_total),
        "total": _num(r.total),
        "invoice_id": r.invoice_id,
        "line_id": r.line_id,
        "booked_at": _ts(r.booked_at),
        "deleted_at": _ts(r.deleted_at),
    }


def _line_row(line: ChargeLine, invoice_id: str | None) -> dict[str, Any]:
    return {
        "id": line.id,
        "invoice_id": invoice_id,
        "service_start": _ts(line.service_period.start),
        "service_end": _ts(line.service_period.end),
        "billing_start": _ts(line.billing_period.start),
        "billing_end": _ts(line.billing_period.end),
        "invoice_at": _ts(line.invoice_at),
        "price": line.price.to_json(),
        "quantity": _num(line.quantity),
        "amount": _num(line.amount),
        "discounts_total": _num(line.discounts_total),
        "credits_total": _num(line.credits_total),
        "total": _num(line.total),
    }


def write_charge_changes(
    conn: Connection,
    namespace: str,
    customer_id: str,
    changes: ChargeChanges,
    ledgers: Iterable[NewAllocationRows],
    now: datetime,
    *,
    gathering_invoice_id: str | None = None,
    delete_emptied: bool = True,
) -> None:
    """Write what the engine decided, one statement per kind of write, in the order of `ChargeChanges`.

    `gathering_invoice_id` receives the new lines the engine left without an invoice (the caller finds or
    creates it first, docs/sync.md §6.2). `delete_emptied`: apply the docs/sync.md §6.3 emptied-invoice rules to the touched
    invoices here; a sync passes False and applies them once for lines and charges (docs/credits.md §3.7 step 4)."""
    args = {"namespace": namespace, "now": now}
    if changes.new_charges:
        new_rows = charge_rows_json(changes.new_charges.values())
        execute_on_cursor(conn, _INSERT_CHARGES, {**args, "rows": new_rows}, rows=False)
    if changes.charge_writes:
        rows = [_charge_row(c) for c in changes.charge_writes.values()]
        execute_on_cursor(conn, _UPDATE_CHARGES, {**args, "rows": json_dumps(rows)}, rows=False)
    if changes.run_writes:
        execute_on_cursor(
            conn,
            _UPDATE_RUNS,
            {**args, "rows": json_dumps([_run_row(r) for r in changes.run_writes.values()])},
            rows=False,
        )
    if changes.line_deletes:
        execute_on_cursor(conn, _DELETE_LINES, {"ns": namespace, "ids": changes.line_deletes, "now": now}, rows=False)
    if changes.new_runs:
        execute_on_cursor(
            conn,
            _INSERT_RUNS,
            {**args, "rows": json_dumps([_run_row(r) for r in changes.new_runs.values()])},
            rows=False,
        )
    if changes.new_lines:
        rows = []
        for new in changes.new_lines.values():
            invoice_id = new.line.invoice_id or gathering_invoice_id
            if invoice_id is None:
                raise ValueError(f"charge line {new.line.id}: no gathering invoice given")
            c = new.charge
            row = _line_row(new.line, invoice_id)
            row.update(
                currency=c.currency,
                name=c.name,
                description=c.description,
                subscription_id=c.subscription_id,
                phase_id=c.phase_id,
                item_id=c.item_id,
                feature_key=c.feature_key,
                discounts=dict(c.discounts) if c.discounts is not None else None,
                tax_config=c.tax_config,
                charge_id=c.id,
            )
            rows.append(row)
        execute_on_cursor(conn, _INSERT_LINES, {**args, "rows": json_dumps(rows)}, rows=False)
    if changes.line_writes:
        rows = [_line_row(line, line.invoice_id) for line in changes.line_writes.values()]
        execute_on_cursor(conn, _UPDATE_LINES, {**args, "rows": json_dumps(rows)}, rows=False)
    for ledger in ledgers:
        insert_allocation_rows(conn, namespace, customer_id, ledger.currency, ledger.new_rows, now)
    if changes.issues:
        insert_validation_issues(conn, namespace, changes.issues, now)
    if delete_emptied and changes.touched_invoices:
        delete_emptied_invoices(conn, namespace, sorted(changes.touched_invoices), now)
