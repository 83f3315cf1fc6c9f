"""Loading charges (docs/credits.md §2.2, §3.3): a subscription's live charges (or a customer's due ones, or some by
id) with their live run, live line and those rows' invoices, in one statement. Every statement is scoped by
namespace and runs in the caller's transaction, under the customer lock (docs/credits.md §3.15).

Writing them is worker.store.charge_write (re-exported here); reads for commands are worker.store.charge_queries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, Connection, Text, and_, any_, bindparam, select

from worker.domain.charges import Charge, ChargeItem, ChargeLine, ChargeRun, index_charges
from worker.domain.persisted import Invoice
from worker.domain.prices import Price, price_from_json
from worker.domain.timeutil import Period, trunc
from worker.errors import MissingInvoiceError
from worker.store.charge_write import write_charge_changes
from worker.store.tables import charge_runs, charges, invoice_lines, invoices

__all__ = ["load_charges", "load_due_charges", "load_subscription_charges", "write_charge_changes"]

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


#: A subscription's live charges as a Core select (worker.store.snapshot folds it into a sync's one read).
SUBSCRIPTION_CHARGES_SELECT = _BY_SUBSCRIPTION


class _Prefixed:
    """A row whose charge columns are labelled `<prefix><name>`, read as `row.<name>`."""

    __slots__ = ("_mapping", "_prefix")

    def __init__(self, row: Any, prefix: str) -> None:
        self._mapping = row._mapping
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        return self._mapping[self._prefix + name]


def charges_from_rows(rows: Iterable[Any], prefix: str = "") -> dict[str, ChargeItem]:
    """Live charges by identity from rows of `SUBSCRIPTION_CHARGES_SELECT` (columns labelled `prefix` + name), in
    charge id order like `load_subscription_charges`."""
    items = [_item(_Prefixed(row, prefix) if prefix else row) for row in rows]
    return index_charges(sorted(items, key=lambda i: i.charge.id))


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
