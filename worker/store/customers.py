"""Customers (an upstream-owned table; this project writes it for demos, tests and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert

from worker.contract.text import format_optional_time, format_time
from worker.store.tables import customers


@dataclass(frozen=True, slots=True)
class Customer:
    namespace: str
    id: str
    name: str | None
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "id": self.id,
            "name": self.name,
            "deleted_at": format_optional_time(self.deleted_at),
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }


_COLUMNS = (
    customers.c.namespace,
    customers.c.id,
    customers.c.name,
    customers.c.deleted_at,
    customers.c.created_at,
    customers.c.updated_at,
)


def upsert_customer(
    conn: Connection,
    namespace: str,
    customer_id: str,
    *,
    name: str | None = None,
    deleted_at: datetime | None = None,
    undelete: bool = False,
) -> Customer:
    """Insert or update a customer, changing only what is given: a missing `name` keeps the stored name
    (the id for a new customer); `deleted_at` soft-deletes; only `undelete` clears a deletion (a quiet
    un-delete would make the next sync re-create the lines the deletion capped, docs/sync.md §3.8)."""
    if undelete and deleted_at is not None:
        raise ValueError("undelete and deleted_at exclude each other")
    new_row = insert(customers).values(
        namespace=namespace, id=customer_id, name=name if name is not None else customer_id, deleted_at=deleted_at
    )
    updates: dict[str, Any] = {"updated_at": func.now()}
    if deleted_at is not None or undelete:
        updates["deleted_at"] = new_row.excluded.deleted_at
    if name is not None:
        updates["name"] = new_row.excluded.name
    statement = new_row.on_conflict_do_update(
        index_elements=[customers.c.namespace, customers.c.id], set_=updates
    ).returning(*_COLUMNS)
    return Customer(**conn.execute(statement).one()._mapping)


def get_customer(conn: Connection, namespace: str, customer_id: str, *, for_share: bool = False) -> Customer | None:
    """The customer row (soft-deleted ones included). `for_share` locks it against deletion."""
    statement = select(*_COLUMNS).where(customers.c.namespace == namespace, customers.c.id == customer_id)
    if for_share:
        statement = statement.with_for_update(key_share=True, read=True)
    row = conn.execute(statement).one_or_none()
    return None if row is None else Customer(**row._mapping)
