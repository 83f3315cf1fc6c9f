"""Charge use cases (docs/credits.md §2.3, §3.6, §3.10-§3.12): advance, `set-quantity`, the invoicing and `set-status`
hooks, and listing. Every writer runs in one transaction under the customer lock (docs/credits.md §3.15); the
engine (worker.domain.charges) decides, worker.store.charges writes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine

from worker.domain.charges import ChargeEngine, ChargeItem, StatusChange
from worker.domain.credit_allocation import Ledger
from worker.errors import NotFoundError
from worker.infra.clock import utcnow
from worker.infra.ids import new_id
from worker.infra.logging import get_logger
from worker.store.charge_queries import charges_with_live_run_on, customers_with_due_charges, list_charge_rows
from worker.store.charge_write import write_charge_changes
from worker.store.charges import load_charges, load_due_charges
from worker.store.credits import load_ledger
from worker.store.customers import get_customer
from worker.store.db import keyset_pages, run_transaction
from worker.store.locks import lock_customer

log = get_logger("worker.app.charges")


@dataclass(frozen=True, slots=True)
class AdvanceChange:
    customer_id: str
    change: StatusChange


def ledgers_for(
    conn: Connection, namespace: str, customer_id: str, runs_by_currency: Mapping[str, Iterable[str]]
) -> dict[str, Ledger]:
    """The customer's ledger per currency, holding the rows of the given runs (docs/credits.md §3.3: allocation rows
    are read only for the charges a step touches)."""
    out: dict[str, Ledger] = {}
    for currency, run_ids in sorted(runs_by_currency.items()):
        out[currency], _ = load_ledger(
            conn, namespace, customer_id, currency, run_ids=sorted(set(run_ids)), new_id=lambda: new_id("cal")
        )
    return out


def _engine(customer_id: str, now: datetime, ledgers: Mapping[str, Any] | None = None) -> ChargeEngine:
    return ChargeEngine(customer_id=customer_id, now=now, new_id=new_id, ledgers=ledgers)


def _write(conn: Connection, namespace: str, customer_id: str, engine: ChargeEngine, now: datetime) -> None:
    if not engine.changes.is_empty or any(ledger.new_rows for ledger in engine.ledgers.values()):
        write_charge_changes(
            conn, namespace, customer_id, engine.changes, engine.ledgers.values(), now, delete_emptied=False
        )


# --- invoicing hooks (docs/credits.md §3.11) -----------------------------------------------------------------


def invoice_charges(
    conn: Connection, namespace: str, customer_id: str, moved: Mapping[str, str], now: datetime
) -> list[StatusChange]:
    """After `subsync invoice` moved charge lines onto drafts (`moved`: charge id → draft id), in its
    transaction: each charge's run, credits allocated (not exact), in order of `invoice_at`, service start,
    identity, line id."""
    items = load_charges(conn, namespace, list(moved))
    ordered = sorted(
        items.values(),
        key=lambda i: (i.charge.invoice_at, i.charge.service_period.start, i.identity, i.line.id if i.line else ""),
    )
    currencies = {i.charge.currency for i in ordered}
    engine = _engine(customer_id, now, ledgers_for(conn, namespace, customer_id, {c: () for c in currencies}))
    for item in ordered:
        engine.invoice(item, moved[item.charge.id])
    _write(conn, namespace, customer_id, engine, now)
    return engine.changes.status_changes


def invoice_status_changed(
    conn: Connection, namespace: str, customer_id: str, invoice_id: str, immutable: bool, now: datetime
) -> list[StatusChange]:
    """`invoices set-status`, in its transaction (the customer lock held): every live run on the invoice
    makes its charge `final` (immutable) or `active` (draft). Voiding returns no credit."""
    charge_ids = charges_with_live_run_on(conn, namespace, invoice_id)
    if not charge_ids:
        return []
    engine = _engine(customer_id, now)
    for item in load_charges(conn, namespace, charge_ids).values():
        engine.invoice_status_changed(item, immutable)
    _write(conn, namespace, customer_id, engine, now)
    return engine.changes.status_changes


# --- advance (docs/credits.md §3.10) -------------------------------------------------------------------------


def _require_customer(conn: Connection, namespace: str, customer_id: str) -> None:
    if get_customer(conn, namespace, customer_id) is None:
        raise NotFoundError(f"customer {customer_id!r} not found in namespace {namespace!r}")


def advance_in_transaction(
    conn: Connection, namespace: str, customer_id: str, as_of: datetime, now: datetime
) -> list[StatusChange]:
    """Advance one customer's due charges as of `as_of` under the customer lock (taken here)."""
    lock_customer(conn, namespace, customer_id)
    items = load_due_charges(conn, namespace, customer_id, as_of)
    if not items:
        return []
    books = {i.charge.currency for i in items if i.charge.credit_only and i.charge.is_flat}
    engine = _engine(customer_id, as_of, ledgers_for(conn, namespace, customer_id, {c: () for c in books}))
    engine.advance_all(items)  # served in booking-time order (docs/credits.md §3.10)
    _write(conn, namespace, customer_id, engine, now)
    return engine.changes.status_changes


def advance_customer(
    engine: Engine, namespace: str, customer_id: str, *, as_of: datetime | None = None, now: datetime | None = None
) -> list[StatusChange]:
    """`charges advance --customer` and the `advance_charges` actor: one transaction. NotFoundError (exit 1)
    for an unknown customer."""
    now = now or utcnow()

    def work(conn: Connection) -> list[StatusChange]:
        _require_customer(conn, namespace, customer_id)
        return advance_in_transaction(conn, namespace, customer_id, as_of or now, now)

    changes = run_transaction(engine, work)
    if changes:
        log.info("charges.advanced", namespace=namespace, customer_id=customer_id, changes=len(changes))
    return changes


def iter_due_customers(
    engine: Engine, now: datetime, *, namespace: str | None = None, page_size: int = 500
) -> Iterator[list[tuple[str, str]]]:
    """Customers with a due charge, a page (one short read transaction) at a time."""
    return keyset_pages(
        engine,
        lambda conn, after: customers_with_due_charges(conn, now, namespace=namespace, after=after, limit=page_size),
        lambda customer: customer,
        page_size,
    )


@dataclass(frozen=True, slots=True)
class AdvanceReport:
    changes: list[AdvanceChange]
    failures: list[tuple[str, str]]  # (customer_id, error message)


def advance_namespace(engine: Engine, namespace: str, *, as_of: datetime | None = None) -> AdvanceReport:
    """`charges advance` without `--customer`: every customer of the namespace with a due charge, each in its
    own transaction; a failing customer does not stop the others (exit 1 afterwards)."""
    now = utcnow()
    at = as_of or now
    changes: list[AdvanceChange] = []
    failures: list[tuple[str, str]] = []
    for page in iter_due_customers(engine, at, namespace=namespace):
        for _, customer_id in page:
            try:
                done = advance_customer(engine, namespace, customer_id, as_of=at, now=now)
            except Exception as exc:  # reported per customer; the others are still committed
                failures.append((customer_id, str(exc) or type(exc).__name__))
                continue
            changes += [AdvanceChange(customer_id, c) for c in done]
    return AdvanceReport(changes, failures)


# --- set-quantity (docs/credits.md §3.12) --------------------------------------------------------------------


def set_quantity(
    engine: Engine, namespace: str, charge_id: str, quantity: Decimal, *, now: datetime | None = None
) -> ChargeItem:
    """Rate and realize a usage charge; the same quantity again writes nothing. ChargeError (exit 1) when the
    charge's state refuses it, NotFoundError when there is no such charge."""
    now = now or utcnow()

    def work(conn: Connection) -> ChargeItem:
        found = load_charges(conn, namespace, [charge_id]).get(charge_id)
        if found is None:
            raise NotFoundError(f"charge {charge_id!r} not found in namespace {namespace!r}")
        customer_id = found.charge.customer_id
        lock_customer(conn, namespace, customer_id)
        item = load_charges(conn, namespace, [charge_id])[charge_id]  # re-read under the lock
        ledgers = (
            ledgers_for(conn, namespace, customer_id, {item.charge.currency: ()}) if item.charge.credit_only else {}
        )
        charge_engine = _engine(customer_id, now, ledgers)
        charge_engine.set_quantity(item, quantity)
        _write(conn, namespace, customer_id, charge_engine, now)
        return item

    return run_transaction(engine, work)


def list_charges(
    engine: Engine,
    namespace: str,
    *,
    customer_id: str | None = None,
    subscription_id: str | None = None,
    charge_ids: list[str] | None = None,
    include_deleted: bool = False,
) -> list[tuple[Any, str | None, list[tuple[Any, list[Any]]]]]:
    """Charges with their runs and allocation rows, read without the lock (docs/credits.md §3.15)."""
    return run_transaction(
        engine,
        lambda conn: list_charge_rows(
            conn,
            namespace,
            customer_id=customer_id,
            subscription_id=subscription_id,
            charge_ids=charge_ids,
            include_deleted=include_deleted,
        ),
    )
