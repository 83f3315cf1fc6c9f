"""Loading charges (docs/credits.md §2.2, §3.3): a subscription's live charges (or a customer's due ones, or some by
id) with their live run, live line and those rows' invoices, in one statement. Every statement is scoped by
namespace and runs in the caller's transaction, under the customer lock (docs/credits.md §3.15).

Writing them is worker.store.charge_write (re-exported here); reads for commands are worker.store.charge_queries."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

from sqlalchemy import ARRAY, Connection, Integer, Text, any_, bindparam, literal_column, select, true
from sqlalchemy.dialects.postgresql import JSONB

from worker.domain.charges import Charge, ChargeItem, ChargeLine, ChargeRun, index_charges
from worker.domain.charges.items import ChargeHead, ChargeIndex
from worker.domain.persisted import Invoice
from worker.domain.prices import Price
from worker.domain.timeutil import Period, trunc
from worker.errors import ConcurrentWriteError, MissingInvoiceError
from worker.store.charge_write import write_charge_changes
from worker.store.json_text import json_from_text, object_from_text, price_from_text
from worker.store.row_versions import row_version
from worker.store.tables import charge_runs, charges, invoice_lines, invoices

__all__ = [
    "load_charge_items",
    "load_charges",
    "load_due_charges",
    "load_subscription_charges",
    "write_charge_changes",
]

# One row per live charge: the charge, its live run (uq_charge_runs_live), its live line (uq_invoice_lines_charge)
# and the invoices of both. Every lookup repeats the namespace. Each is a LATERAL subquery of at most one row
# (LIMIT 1: the unique indexes allow no second; it also keeps the planner from flattening it into a join), so
# each is an index probe per charge whatever the statistics say. As plain outer joins, the planner — on a new
# database, or with no live run anywhere — scanned every invoice of the namespace once per charge (73 charges x
# 305 invoices: 22,265 rows filtered out, 3 ms of a 4 ms read; docs/performance.md "Charge read plans").
_rs, _ls, _is = charge_runs.c, invoice_lines.c, invoices.c
_ONE = literal_column("1", Integer)  # LIMIT 1 written into the SQL, not bound: worker.store.snapshot reuses the text
_c = charges.c


def _row_version(table: str) -> Any:
    """The version of the row read from `table` (docs/sync.md §8.6, worker.store.row_versions)."""
    return literal_column(row_version(table)).label("row_version")


_r = (
    select(
        _rs.id,
        _rs.service_period_start,
        _rs.service_period_end,
        _rs.quantity,
        _rs.amount,
        _rs.discounts_total,
        _rs.credits_total,
        _rs.total,
        _rs.invoice_id,
        _rs.line_id,
        _rs.booked_at,
        _row_version("charge_runs"),
    )
    .where(_rs.namespace == _c.namespace, _rs.charge_id == _c.id, _rs.deleted_at.is_(None))
    .limit(_ONE)
    .lateral("r")
)
_l = (
    select(
        _ls.id,
        _ls.invoice_id,
        _ls.service_period_start,
        _ls.service_period_end,
        _ls.billing_period_start,
        _ls.billing_period_end,
        _ls.invoice_at,
        _ls.price.cast(Text).label("price"),
        _ls.quantity,
        _ls.amount,
        _ls.discounts_total,
        _ls.credits_total,
        _ls.total,
        _row_version("invoice_lines"),
    )
    .where(_ls.namespace == _c.namespace, _ls.charge_id == _c.id, _ls.deleted_at.is_(None))
    .limit(_ONE)
    .lateral("l")
)


def _invoice_of(invoice_id: Any, name: str) -> Any:
    """The invoice `invoice_id` names, as a LATERAL lookup (see above)."""
    return (
        select(_is.type, _is.status, _is.immutable, _is.deleted_at, _row_version("invoices"))
        .where(_is.namespace == _c.namespace, _is.id == invoice_id)
        .limit(_ONE)
        .lateral(name)
    )


_ri, _li = _invoice_of(_r.c.invoice_id, "ri"), _invoice_of(_l.c.invoice_id, "li")
_JOINED = charges.outerjoin(_r, true()).outerjoin(_ri, true()).outerjoin(_l, true()).outerjoin(_li, true())
# A charge's columns as `_item` reads them, JSON columns as text (worker.store.json_text); its namespace and
# timestamps of its own (created_at, updated_at) are never read.
_CHARGE_COLUMNS = [
    c.cast(Text).label(c.name) if isinstance(c.type, JSONB) else c
    for c in charges.c
    if c.name not in ("namespace", "created_at", "updated_at")
]
_BASE = select(
    *_CHARGE_COLUMNS,
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


def _price(text: str, prices: dict[str, Price | None]) -> Price:
    price = price_from_text(text, prices)
    assert price is not None  # NOT NULL column
    return price


# The columns `_item` reads, in its order: one C-level `itemgetter` per result takes them all from a row (reading
# ~65 attributes one by one, through the label prefix of the snapshot's read, was most of loading a charge:
# docs/performance.md "Credit sync cuts (issue 23, second pass)").
_COLUMNS = (
    "id",
    "customer_id",
    "subscription_id",
    "subscription_phase_id",
    "subscription_item_id",
    "unique_reference_id",
    "type",
    "settlement_mode",
    "status",
    "currency",
    "name",
    "description",
    "feature_key",
    "price",
    "discounts",
    "tax_config",
    "annotations",
    "pro_rating_enabled",
    "pro_rating_mode",
    "service_period_start",
    "service_period_end",
    "full_service_period_start",
    "full_service_period_end",
    "billing_period_start",
    "billing_period_end",
    "invoice_at",
    "amount_before_proration",
    "amount_after_proration",
    "quantity",
    "rated_amount",
    "advance_after",
    "deleted_at",
    "r_id",
    "r_start",
    "r_end",
    "r_quantity",
    "r_amount",
    "r_discounts",
    "r_credits",
    "r_total",
    "r_invoice_id",
    "r_line_id",
    "r_booked_at",
    "ri_type",
    "ri_status",
    "ri_immutable",
    "ri_deleted_at",
    "l_id",
    "l_invoice_id",
    "l_start",
    "l_end",
    "l_billing_start",
    "l_billing_end",
    "l_invoice_at",
    "l_price",
    "l_quantity",
    "l_amount",
    "l_discounts",
    "l_credits",
    "l_total",
    "li_type",
    "li_status",
    "li_immutable",
    "li_deleted_at",
)


def _items(rows: Iterable[Any], prefix: str = "") -> Iterator[ChargeItem]:
    """`_item` of each row of `_BASE` (columns labelled `prefix` + name)."""
    getter: Callable[[Any], tuple[Any, ...]] | None = None
    prices: dict[str, Price | None] = {}  # each distinct price of the read parsed once
    for row in rows:
        if getter is None:
            position = {name: i for i, name in enumerate(row._fields)}
            getter = itemgetter(*(position[prefix + name] for name in _COLUMNS))
        yield _item(getter(row), prices)


def _missing_run_invoice(run_id: str, invoice_id: str) -> MissingInvoiceError:
    """docs/credits.md §3.3: an error, like a line's missing invoice (docs/sync.md §4)."""
    return MissingInvoiceError(f"charge run {run_id} references missing invoice {invoice_id}")


def _item(values: tuple[Any, ...], prices: dict[str, Price | None]) -> ChargeItem:
    (
        charge_id,
        customer_id,
        subscription_id,
        phase_id,
        item_id,
        identity,
        type_,
        settlement_mode,
        status,
        currency,
        name,
        description,
        feature_key,
        price,
        discounts,
        tax_config,
        annotations,
        pro_rating_enabled,
        pro_rating_mode,
        service_start,
        service_end,
        full_start,
        full_end,
        billing_start,
        billing_end,
        invoice_at,
        amount_before_proration,
        amount_after_proration,
        quantity,
        rated_amount,
        advance_after,
        deleted_at,
        r_id,
        r_start,
        r_end,
        r_quantity,
        r_amount,
        r_discounts,
        r_credits,
        r_total,
        r_invoice_id,
        r_line_id,
        r_booked_at,
        ri_type,
        ri_status,
        ri_immutable,
        ri_deleted_at,
        l_id,
        l_invoice_id,
        l_start,
        l_end,
        l_billing_start,
        l_billing_end,
        l_invoice_at,
        l_price,
        l_quantity,
        l_amount,
        l_discounts,
        l_credits,
        l_total,
        li_type,
        li_status,
        li_immutable,
        li_deleted_at,
    ) = values
    # Positional, in `Charge`'s field order (keyword arguments cost more per charge).
    charge = Charge(
        charge_id,
        customer_id,
        subscription_id,
        phase_id,
        item_id,
        identity,
        type_,
        settlement_mode,
        status,
        currency,
        name,
        description,
        feature_key,
        _price(price, prices),
        json_from_text(discounts),
        json_from_text(tax_config),
        object_from_text(annotations),
        pro_rating_enabled,
        pro_rating_mode,
        Period(service_start, service_end).truncated(),
        Period(full_start, full_end).truncated(),
        Period(billing_start, billing_end).truncated(),
        trunc(invoice_at),
        _d(amount_before_proration),
        _d(amount_after_proration),
        _d(quantity),
        _d(rated_amount),
        advance_after,
        deleted_at,
    )
    run = run_invoice = line = line_invoice = None
    if r_id is not None:
        run = ChargeRun(
            id=r_id,
            charge_id=charge_id,
            customer_id=customer_id,
            currency=currency,
            service_period=Period(r_start, r_end),
            quantity=_d(r_quantity),
            amount=Decimal(r_amount),
            discounts_total=Decimal(r_discounts),
            credits_total=Decimal(r_credits),
            total=Decimal(r_total),
            invoice_id=r_invoice_id,
            line_id=r_line_id,
            booked_at=r_booked_at,
        )
        if r_invoice_id is not None:
            if ri_type is None:
                raise _missing_run_invoice(r_id, r_invoice_id)
            run_invoice = Invoice(r_invoice_id, ri_type, ri_status, ri_immutable, ri_deleted_at is not None)
    if l_id is not None:
        line = ChargeLine(
            id=l_id,
            charge_id=charge_id,
            invoice_id=l_invoice_id,
            service_period=Period(l_start, l_end).truncated(),
            billing_period=Period(l_billing_start, l_billing_end).truncated(),
            invoice_at=trunc(l_invoice_at),
            price=_price(l_price, prices),
            quantity=_d(l_quantity),
            amount=_d(l_amount),
            discounts_total=_d(l_discounts),
            credits_total=_d(l_credits),
            total=_d(l_total),
        )
        if li_type is not None:
            line_invoice = Invoice(l_invoice_id, li_type, li_status, li_immutable, li_deleted_at is not None)
    return ChargeItem(charge, run, run_invoice, line, line_invoice)


#: A subscription's live charges as a Core select (worker.store.snapshot folds it into a sync's one read), with the
#: versions of the rows each is read from (docs/sync.md §8.6 digests them instead of the charge's 66 columns).
#: Unordered: `charges_from_rows` orders them itself, and sorting ~70 rows of ~1.2 kB each cost the server more
#: than Python's sort of their ids.
SUBSCRIPTION_CHARGES_SELECT = _BY_SUBSCRIPTION.order_by(None).add_columns(
    literal_column(
        row_version("charges")
        + "".join(f" || '/' || coalesce({alias}.row_version, '-')" for alias in ("r", "ri", "l", "li"))
    ).label("row_version")
)


#: The columns of a `ChargeHead` (docs/credits.md §3.3), and those that check a run's invoice exists.
_HEAD: tuple[str, ...] = ("id", "unique_reference_id", "settlement_mode", "currency", "service_period_end")
_HEAD += ("deleted_at", "r_id", "r_invoice_id", "ri_type", "ri_immutable")
#: The columns of `SUBSCRIPTION_CHARGES_SELECT` a sync reads (worker.store.snapshot): the heads and the row versions.
#: The other ~55 are read only for the charges a patch changes (`load_charge_items`; docs/performance.md "The
#: charges' heads alone").
HEAD_COLUMNS: tuple[str, ...] = (*_HEAD, "row_version")


def charges_from_rows(rows: Sequence[Any], prefix: str = "") -> ChargeIndex:
    """Live charges by identity from rows of `SUBSCRIPTION_CHARGES_SELECT` (columns labelled `prefix` + name), in
    charge id order like `load_subscription_charges`. Only each charge's `ChargeHead` is taken from its row now;
    the `ChargeItem` is built when the sync asks for it (`ChargeIndex`). The checks of `index_charges` and `_item`
    are made here, on every row: a missing run invoice raises whether the charge changes or not."""
    if not rows:
        return ChargeIndex(())
    position = {name: i for i, name in enumerate(rows[0]._fields)}
    head_of = itemgetter(*(position[prefix + name] for name in _HEAD))
    heads: list[tuple[ChargeHead, Any]] = []
    for row in rows:
        charge_id, identity, mode, currency, service_end, deleted_at, r_id, r_invoice_id, ri_type, immutable = head_of(
            row
        )
        if deleted_at is not None:
            continue
        if r_invoice_id is not None and ri_type is None:  # `_item`'s check, on every row
            raise _missing_run_invoice(r_id, r_invoice_id)
        run_immutable = r_invoice_id is not None and bool(immutable)
        head = ChargeHead(charge_id, identity, mode, currency, trunc(service_end), r_id, r_invoice_id, run_immutable)
        heads.append((head, row))
    heads.sort(key=lambda pair: pair[0].id)
    if not all(prefix + name in position for name in _COLUMNS):  # heads alone (HEAD_COLUMNS)
        return ChargeIndex(heads)  # items read when a decision needs them (`load_charge_items`)
    values_of = itemgetter(*(position[prefix + name] for name in _COLUMNS))
    prices: dict[str, Price | None] = {}  # each distinct price of the read parsed once, as in `_items`
    return ChargeIndex(heads, lambda row: _item(values_of(row), prices))


def load_charge_items(
    conn: Connection, namespace: str, charges: ChargeIndex, identities: Sequence[str]
) -> dict[str, ChargeItem]:
    """The live charges `identities` of `charges` (read by their heads alone) in full, by identity, in one statement
    (`worker.domain.decide.ChargeItemsNeeded`). Under the customer lock the sync holds, each is the charge its head
    was read from; ConcurrentWriteError when one is not (a writer without the lock changed it)."""
    heads = charges.heads
    found = load_charges(conn, namespace, [heads[i].id for i in identities])
    out: dict[str, ChargeItem] = {}
    for identity in identities:
        item = found.get(heads[identity].id)
        if item is None or item.identity != identity or item.charge.deleted_at is not None:
            raise ConcurrentWriteError(f"charge {heads[identity].id} ({identity}) changed while it was being synced")
        out[identity] = item
    return out


def load_subscription_charges(conn: Connection, namespace: str, subscription_id: str) -> dict[str, ChargeItem]:
    """docs/credits.md §3.3: the subscription's live charges by identity, each with its realization (one statement)."""
    rows = conn.execute(_BY_SUBSCRIPTION, {"namespace": namespace, "subscription_id": subscription_id})
    return index_charges(_items(rows))


def load_due_charges(conn: Connection, namespace: str, customer_id: str, now: datetime) -> list[ChargeItem]:
    """docs/credits.md §3.10: the customer's live charges with `advance_after ≤ now`, in advance order (one statement)."""
    rows = conn.execute(_DUE_OF_CUSTOMER, {"namespace": namespace, "customer_id": customer_id, "now": now})
    return list(_items(rows))


def load_charges(conn: Connection, namespace: str, charge_ids: Sequence[str]) -> dict[str, ChargeItem]:
    """Charges by id (deleted ones too), with their live run and line (one statement)."""
    if not charge_ids:
        return {}
    rows = conn.execute(_BY_IDS, {"namespace": namespace, "ids": list(charge_ids)})
    return {item.charge.id: item for item in _items(rows)}
