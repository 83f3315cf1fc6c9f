"""The `invoices set-status` use case (docs/credits.md §3.11): a standard invoice moves to draft, issued, paid or
voided, and the charges with a live run on it follow, in one transaction under the customer lock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from worker.app.charges import invoice_status_changed
from worker.infra.clock import utcnow
from worker.store.db import run_transaction
from worker.store.invoices import set_invoice_status


def change_invoice_status(
    engine: Engine, namespace: str, invoice_id: str, status: str, *, now: datetime | None = None
) -> Any:
    """Set the status (`immutable` unless draft) and return the updated invoice row. NotFoundError for an unknown
    invoice, InvalidStatusChange for a gathering or deleted one or an unknown status (nothing written)."""
    now = now or utcnow()

    def work(conn: Connection) -> Any:
        row = set_invoice_status(conn, namespace, invoice_id, status, now)  # takes the customer lock
        # docs/credits.md §3.11: runs on the invoice follow its status
        invoice_status_changed(conn, namespace, row.customer_id, invoice_id, row.immutable, now)
        return row

    return run_transaction(engine, work)
