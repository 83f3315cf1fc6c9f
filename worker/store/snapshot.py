"""docs/sync.md §8.1 "Anatomy of a sync", step *load*: everything one sync reads, under the customer lock, into
an immutable `Snapshot` (worker.domain.snapshot).

Statements, whatever the number of lines and charges: the subscription with the customer lock (one), its
phases and items (one, not for a subscription deleted at `now`), the persisted lines, groups and invoices with
the gathering invoice (one), then only when needed: the charges (one, when the subscription has any), the sync
issues of immutable invoices (one, when a line or a charge run is on one), and the credit ledgers (one, when a
charge has a live run on a mutable invoice)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Connection

from worker.domain.charges.routing import SettlementMode
from worker.domain.snapshot import Snapshot
from worker.store.charges import load_subscription_charges
from worker.store.credits import load_sync_ledgers
from worker.store.locks import DEFAULT_LOCK_TIMEOUT
from worker.store.persisted import load_issue_keys, load_persisted_rows
from worker.store.view import load_and_lock_subscription, load_phases


def load_snapshot(
    conn: Connection, namespace: str, subscription_id: str, *, now: datetime, lock_timeout: str = DEFAULT_LOCK_TIMEOUT
) -> Snapshot:
    """Lock the subscription's customer (docs/sync.md §6.1) and read what a sync of it at `now` decides on.
    NotFoundError when there is no such subscription; MissingInvoiceError when a line or a charge run names a
    missing invoice (docs/sync.md §4, docs/credits.md §3.3)."""
    loaded = load_and_lock_subscription(conn, namespace, subscription_id, lock_timeout)
    record = loaded.record
    phases = None if loaded.is_deleted(now) else tuple(load_phases(conn, namespace, subscription_id, now))
    rows = load_persisted_rows(conn, namespace, subscription_id, record.customer_id, record.currency)
    charges = load_subscription_charges(conn, namespace, subscription_id) if rows.has_charges else {}
    immutable = {i.id for i in rows.invoices if i.immutable}
    runs: dict[str, set[str]] = {}
    for item in charges.values():
        run = item.run
        if run is None:
            continue
        if item.run_immutable:
            assert run.invoice_id is not None
            immutable.add(run.invoice_id)
        else:
            runs.setdefault(item.charge.currency, set()).add(run.id)
    issues = load_issue_keys(conn, namespace, immutable)
    return Snapshot(
        namespace=namespace,
        subscription=record,
        deleted_at=loaded.deleted_at,
        customer_exists=loaded.customer_exists,
        customer_deleted_at=loaded.customer_deleted_at,
        settlement_mode=cast(SettlementMode, loaded.settlement_mode),  # the column's check: one of SETTLEMENT_MODES
        phases=phases,
        persisted=rows.state(issues),
        gathering_invoice_id=rows.gathering_invoice_id,
        charges=charges,
        ledgers=load_sync_ledgers(conn, namespace, record.customer_id, runs),
    )
