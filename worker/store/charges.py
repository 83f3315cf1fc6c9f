"""Loading and writing charges (docs/credits.md §2.2, §3.3, §3.7): a subscription's live charges with their live run,
live line and those rows' invoices in one statement; the engine's `ChargeChanges` written with one statement
per kind of write, whatever the number of charges (as worker.store.apply does for lines). Every statement is
scoped by namespace and runs in the caller's transaction, under the customer lock (docs/credits.md §3.15)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, Connection, Text, and_, any_, bindparam, select, text, tuple_, update

from worker.domain.charges import Charge, ChargeChanges, ChargeItem, ChargeLine, ChargeRun, index_charges
from worker.domain.credit_allocation import Ledger
from worker.domain.money import format_decimal
from worker.domain.persisted import Invoice, IssueKey
from worker.domain.prices import Price, price_from_json
from worker.domain.timeutil import Period, trunc
from worker.domain.updater import COMPONENT
from worker.errors import MissingInvoiceError
from worker.store.apply import delete_emptied_invoices, insert_validation_issues
from worker.store.credits import insert_allocation_rows
from worker.store.db import json_dumps
from worker.store.tables import (
    charge_runs,
    charges,
    credit_allocations,
    invoice_lines,
    invoice_validation_issues,
    invoices,
)

# One row per live charge: the charge, its live run (uq_charge_runs_live), its live line (uq_invoice_lines_charge)
# and the invoices of both. Every join repeats the namespace.
_r, _l = charge_runs.alias("r"), invoice_lines.alias("l")
_ri, _li = invoices.alias("ri"), invoices.alias("li")
_c = charges.c
_JOINED = (
    charges.outerjoin(_r, and_(_r.c.namespace == _c.namespace, _r.c.charge_id == _c.id, _r.c.deleted_at.is_(None)))
    .outerjoin(_ri, and_(_ri.c.namespace == _c.namespace, _ri.c.id == _r.c.invoice_id))
    .outerjoin(_l, and_(_l.c.namespace == _c.namespace, _l.c.charge_id == _c.id, _l.c.deleted_at.is_(None)))
    .outerjoin(_li, and_(_li.c.namespace == _c.namespace, _li.c.id == _l.c.invoice_id))
)
_BASE = select(
    *charges.c,
    _r.c.id.label("r_id"),
    _r.c.service_period_start.label("r_start"),
    _r.c.service_period_end.label("r_end"),
    _r.c.quantity.label("r_quantity"),
    _r.c.amount.label("r_amount"),
    _r.c.discounts_total.label("r_discounts"),
    _r.c.credits_total.label("r_credits"),
    _r.c.total.label("r_total"),
    _r.c.invoice_id.label("r_invoice_id"),
    _r.c.line_id.label("r_line_id"),
    _r.c.booked_at.label("r_booked_at"),
    _ri.c.type.label("ri_type"),
    _ri.c.status.label("ri_status"),
    _ri.c.immutable.label("ri_immutable"),
    _ri.c.deleted_at.label("ri_deleted_at"),
    _l.c.id.label("l_id"),
    _l.c.invoice_id.label("l_invoice_id"),
    _l.c.service_period_start.label("l_start"),
    _l.c.service_period_end.label("l_end"),
    _l.c.billing_period_start.label("l_billing_start"),
    _l.c.billing_period_end.label("l_billing_end"),
    _l.c.invoice_at.label("l_invoice_at"),
    _l.c.price.label("l_price"),
    _l.c.quantity.label("l_quantity"),
    _l.c.amount.label("l_amount"),
    _l.c.discounts_total.label("l_discounts"),
    _l.c.credits_total.label("l_credits"),
    _l.c.total.label("l_total"),
    _li.c.type.label("li_type"),
    _li.c.status.label("li_status"),
    _li.c.immutable.label("li_immutable"),
    _li.c.deleted_at.label("li_deleted_at"),
).select_from(_JOINED)
_BY_SUBSCRIPTION = _BASE.where(
    _c.namespace == bindparam("namespace"),
    _c.subscription_id == bindparam("subscription_id"),
    _c.deleted_at.is_(None),
).order_by(_c.id)
_DUE_OF_CUSTOMER = _BASE.where(
    _c.namespace == bindparam("namespace"),
    _c.customer_id == bindparam("customer_id"),
    _c.deleted_at.is_(None),
    _c.advance_after <= bindparam("now"),
).order_by(_c.advance_after, _c.unique_reference_id, _c.id)
_BY_IDS = _BASE.where(
    _c.namespace == bindparam("namespace"), _c.id == any_(bindparam("ids", type_=ARRAY(Text)))
).order_by(_c.id)


def _d(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def _price(data: Mapping[str, Any]) -> Price:
    price = price_from_json(data)
    assert price is not None  # NOT NULL column
    return price


def _item(row: Any) -> ChargeItem:
    charge = Charge(
        id=row.id,
        customer_id=row.customer_id,
        subscription_id=row.subscription_id,
        phase_id=row.subscription_phase_id,
        item_id=row.subscription_item_id,
        identity=row.unique_reference_id,
        type=row.type,
        settlement_mode=row.settlement_mode,
        status=row.status,
        currency=row.currency,
        name=row.name,
        description=row.description,
        feature_key=row.feature_key,
        price=_price(row.price),
        discounts=row.discounts,
        tax_config=row.tax_config,
        annotations=row.annotations or {},
        pro_rating_enabled=row.pro_rating_enabled,
        pro_rating_mode=row.pro_rating_mode,
        service_period=Period(row.service_period_start, row.service_period_end).truncated(),
        full_service_period=Period(row.full_service_period_start, row.full_service_period_end).truncated(),
        billing_period=Period(row.billing_period_start, row.billing_period_end).truncated(),
        invoice_at=trunc(row.invoice_at),
        amount_before_proration=_d(row.amount_before_proration),
        amount_after_proration=_d(row.amount_after_proration),
        quantity=_d(row.quantity),
        rated_amount=_d(row.rated_amount),
        advance_after=row.advance_after,
        deleted_at=row.deleted_at,
    )
    run = run_invoice = line = line_invoice = None
    if row.r_id is not None:
        run = ChargeRun(
            id=row.r_id,
            charge_id=row.id,
            customer_id=row.customer_id,
            currency=row.currency,
            service_period=Period(row.r_start, row.r_end),
            quantity=_d(row.r_quantity),
            amount=Decimal(row.r_amount),
            discounts_total=Decimal(row.r_discounts),
            credits_total=Decimal(row.r_credits),
            total=Decimal(row.r_total),
            invoice_id=row.r_invoice_id,
            line_id=row.r_line_id,
            booked_at=row.r_booked_at,
        )
        if row.r_invoice_id is not None:
            if row.ri_type is None:
                # docs/credits.md §3.3: an error, like a line's missing invoice (docs/sync.md §4)
                raise MissingInvoiceError(f"charge run {row.r_id} references missing invoice {row.r_invoice_id}")
            run_invoice = Invoice(
                row.r_invoice_id, row.ri_type, row.ri_status, row.ri_immutable, row.ri_deleted_at is not None
            )
    if row.l_id is not None:
        line = ChargeLine(
            id=row.l_id,
            charge_id=row.id,
            invoice_id=row.l_invoice_id,
            service_period=Period(row.l_start, row.l_end).truncated(),
            billing_period=Period(row.l_billing_start, row.l_billing_end).truncated(),
            invoice_at=trunc(row.l_invoice_at),
            price=_price(row.l_price),
            quantity=_d(row.l_quantity),
            amount=_d(row.l_amount),
            discounts_total=_d(row.l_discounts),
            credits_total=_d(row.l_credits),
            total=_d(row.l_total),
        )
        if row.li_type is not None:
            line_invoice = Invoice(
                row.l_invoice_id, row.li_type, row.li_status, row.li_immutable, row.li_deleted_at is not None
            )
    return ChargeItem(charge, run, run_invoice, line, line_invoice)


def load_subscription_charges(conn: Connection, namespace: str, subscription_id: str) -> dict[str, ChargeItem]:
    """docs/credits.md §3.3: the subscription's live charges by identity, each with its realization (one statement)."""
    rows = conn.execute(_BY_SUBSCRIPTION, {"namespace": namespace, "subscription_id": subscription_id})
    return index_charges(_item(row) for row in rows)


def load_due_charges(conn: Connection, namespace: str, customer_id: str, now: datetime) -> list[ChargeItem]:
    """docs/credits.md §3.10: the customer's live charges with `advance_after ≤ now`, in advance order (one statement)."""
    rows = conn.execute(_DUE_OF_CUSTOMER, {"namespace": namespace, "customer_id": customer_id, "now": now})
    return [_item(row) for row in rows]


def load_charges(conn: Connection, namespace: str, charge_ids: Sequence[str]) -> dict[str, ChargeItem]:
    """Charges by id (deleted ones too), with their live run and line (one statement)."""
    if not charge_ids:
        return {}
    rows = conn.execute(_BY_IDS, {"namespace": namespace, "ids": list(charge_ids)})
    return {item.charge.id: item for item in map(_item, rows)}


# --- writing ------------------------------------------------------------------------------------


def _ts(t: datetime | None) -> str | None:
    return None if t is None else trunc(t).isoformat()


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


def _charge_row(c: Charge) -> dict[str, Any]:
    return {
        "id": c.id,
        "customer_id": c.customer_id,
        "subscription_id": c.subscription_id,
        "phase_id": c.phase_id,
        "item_id": c.item_id,
        "unique_reference_id": c.identity,
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
    ledgers: Iterable[Ledger],
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
        rows = [_charge_row(c) for c in changes.new_charges.values()]
        conn.execute(_INSERT_CHARGES, {**args, "rows": json_dumps(rows)})
    if changes.charge_writes:
        rows = [_charge_row(c) for c in changes.charge_writes.values()]
        conn.execute(_UPDATE_CHARGES, {**args, "rows": json_dumps(rows)})
    if changes.run_writes:
        conn.execute(_UPDATE_RUNS, {**args, "rows": json_dumps([_run_row(r) for r in changes.run_writes.values()])})
    if changes.line_deletes:
        conn.execute(_DELETE_LINES, {"ns": namespace, "ids": changes.line_deletes, "now": now})
    if changes.new_runs:
        conn.execute(_INSERT_RUNS, {**args, "rows": json_dumps([_run_row(r) for r in changes.new_runs.values()])})
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
        conn.execute(_INSERT_LINES, {**args, "rows": json_dumps(rows)})
    if changes.line_writes:
        rows = [_line_row(line, line.invoice_id) for line in changes.line_writes.values()]
        conn.execute(_UPDATE_LINES, {**args, "rows": json_dumps(rows)})
    for ledger in ledgers:
        insert_allocation_rows(conn, namespace, customer_id, ledger.currency, ledger.new_rows, now)
    if changes.issues:
        insert_validation_issues(conn, namespace, changes.issues, now)
    if delete_emptied and changes.touched_invoices:
        delete_emptied_invoices(conn, namespace, sorted(changes.touched_invoices), now)


_v = invoice_validation_issues
_ISSUE_KEYS = select(_v.c.invoice_id, _v.c.path, _v.c.component, _v.c.code, _v.c.message).where(
    _v.c.namespace == bindparam("namespace"),
    _v.c.invoice_id == any_(bindparam("ids", type_=ARRAY(Text))),
    _v.c.component == COMPONENT,
    _v.c.deleted_at.is_(None),
)


def load_issue_keys(conn: Connection, namespace: str, invoice_ids: Iterable[str]) -> list[IssueKey]:
    """The live sync issues of the given invoices (docs/sync.md §6.4 de-duplication of docs/credits.md §3.13 issues)."""
    ids = sorted(set(invoice_ids))
    if not ids:
        return []
    rows = conn.execute(_ISSUE_KEYS, {"namespace": namespace, "ids": ids}).all()
    return [IssueKey(r.invoice_id, r.path or "", r.component, r.code, r.message) for r in rows]


_LIVE_RUN_CHARGES_OF_INVOICE = select(charge_runs.c.charge_id).where(
    charge_runs.c.namespace == bindparam("namespace"),
    charge_runs.c.invoice_id == bindparam("invoice_id"),
    charge_runs.c.deleted_at.is_(None),
)


def charges_with_live_run_on(conn: Connection, namespace: str, invoice_id: str) -> list[str]:
    """Ids of the charges whose live run is on `invoice_id` (docs/credits.md §3.11 `invoices set-status`)."""
    rows = conn.execute(_LIVE_RUN_CHARGES_OF_INVOICE, {"namespace": namespace, "invoice_id": invoice_id})
    return sorted(r.charge_id for r in rows)


# --- reading for commands (docs/credits.md §2.4) -----------------------------------------------------------

_a = credit_allocations


def list_charge_rows(
    conn: Connection,
    namespace: str,
    *,
    customer_id: str | None = None,
    subscription_id: str | None = None,
    charge_ids: Sequence[str] | None = None,
    include_deleted: bool = False,
) -> list[tuple[Any, str | None, list[tuple[Any, list[Any]]]]]:
    """Charges (docs/credits.md §2.4 order) with their live line id, their runs (by `created_at`, id) and each run's
    allocation rows (by `seq`): three statements, whatever the number of charges."""
    query = select(charges).where(_c.namespace == namespace)
    if customer_id is not None:
        query = query.where(_c.customer_id == customer_id)
    if subscription_id is not None:
        query = query.where(_c.subscription_id == subscription_id)
    if charge_ids is not None:
        query = query.where(_c.id == any_(bindparam("ids", list(charge_ids), type_=ARRAY(Text))))
    if not include_deleted:
        query = query.where(_c.deleted_at.is_(None))
    rows = conn.execute(query.order_by(_c.service_period_start, _c.unique_reference_id, _c.id)).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    ids_param = bindparam("ids", ids, type_=ARRAY(Text))
    line_ids = {
        r.charge_id: r.id
        for r in conn.execute(
            select(invoice_lines.c.charge_id, invoice_lines.c.id).where(
                invoice_lines.c.namespace == namespace,
                invoice_lines.c.charge_id == any_(ids_param),
                invoice_lines.c.deleted_at.is_(None),
            )
        )
    }
    runs = conn.execute(
        select(charge_runs)
        .where(charge_runs.c.namespace == namespace, charge_runs.c.charge_id == any_(ids_param))
        .order_by(charge_runs.c.created_at, charge_runs.c.id)
    ).all()
    allocations: dict[str, list[Any]] = {}
    if runs:
        for row in conn.execute(
            select(_a).where(_a.c.namespace == namespace, _a.c.charge_id == any_(ids_param)).order_by(_a.c.seq)
        ):
            allocations.setdefault(row.run_id, []).append(row)
    runs_of: dict[str, list[tuple[Any, list[Any]]]] = {}
    for run in runs:
        runs_of.setdefault(run.charge_id, []).append((run, allocations.get(run.id, [])))
    return [(r, line_ids.get(r.id), runs_of.get(r.id, [])) for r in rows]


def customers_with_due_charges(
    conn: Connection,
    now: datetime,
    *,
    namespace: str | None = None,
    after: tuple[str, str] | None = None,
    limit: int = 500,
) -> list[tuple[str, str]]:
    """(namespace, customer_id) of customers with a live charge whose `advance_after ≤ now` (docs/credits.md §2.5),
    in key order after `after` (keyset paging, like `reconcile_due`)."""
    query = (
        select(_c.namespace, _c.customer_id)
        .where(_c.advance_after.is_not(None), _c.advance_after <= now, _c.deleted_at.is_(None))
        .group_by(_c.namespace, _c.customer_id)
        .order_by(_c.namespace, _c.customer_id)
        .limit(limit)
    )
    if namespace is not None:
        query = query.where(_c.namespace == namespace)
    if after is not None:
        query = query.where(tuple_(_c.namespace, _c.customer_id) > tuple_(*after))
    return [(r.namespace, r.customer_id) for r in conn.execute(query)]
