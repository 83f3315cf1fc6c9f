"""Charge reads for commands and the advance sweep (docs/credits.md §2.4, §2.5, §3.11): which charges have a live run
on an invoice, the charges with their runs and allocation rows for listing, and the customers with a due charge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Connection, Text, any_, bindparam, select, tuple_

from worker.store.tables import charge_runs, charges, credit_allocations, invoice_lines

_c = charges.c

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
