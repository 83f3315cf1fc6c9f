"""The digest of a sync's read (docs/sync.md §8.6, "Recording"): computed by Postgres when a recorded digest is
compared, by the worker (`rows_digest`) when there is none to compare. A decision recorded with one is reused
with the other, so both must give the same digest of the same rows, whatever order the rows come in."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, update

from tests.builders import apply, document, fee, t, usage
from worker.app.sync import sync_subscription
from worker.store.db import execute_on_cursor
from worker.store.snapshot import (
    _READ_DIGESTED,
    _READ_VERSIONED,
    _READ_WITH_CHARGE_HEADS_DIGESTED,
    _READ_WITH_CHARGE_HEADS_VERSIONED,
    rows_digest,
)
from worker.store.tables import subscriptions

NS = "digest"
HEAD = "head|code|2000|True/None"


def _seed(db: Engine, mode: str, subscription_id: str) -> dict[str, Any]:
    items = {"fee": [fee("fee", "10", "2024-01-01T00:00:00Z")], "api": [usage("api", "0.5", "2024-01-01T00:00:00Z")]}
    apply(db, document(NS, items, subscription_id=subscription_id, customer_id=f"c_{subscription_id}"))
    with db.begin() as conn:
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.namespace == NS, subscriptions.c.id == subscription_id)
            .values(settlement_mode=mode)
        )
    sync_subscription(db, NS, subscription_id, as_of=t("2024-07-15T00:00:00Z"))
    return {
        "namespace": NS,
        "subscription_id": subscription_id,
        "customer_id": f"c_{subscription_id}",
        "currency": "USD",
        "now": datetime.now(UTC),
    }


@pytest.mark.parametrize("mode", ["invoice_only", "credit_only"])
def test_postgres_and_the_worker_digest_the_same_rows_alike(db: Engine, mode: str) -> None:
    params = _seed(db, mode, f"sub_{mode}")
    charges = mode != "invoice_only"
    versioned = _READ_WITH_CHARGE_HEADS_VERSIONED if charges else _READ_VERSIONED
    digested = _READ_WITH_CHARGE_HEADS_DIGESTED if charges else _READ_DIGESTED
    with db.begin() as conn:
        rows = execute_on_cursor(conn, versioned, params)
        server = execute_on_cursor(conn, digested, {**params, "decision_head": HEAD, "known_digest": None})
    assert len(rows) == len(server) > 6  # phases, lines or charges, invoices: every row comes back
    if charges:
        assert sum(r.c_id is not None for r in rows) >= 6
    else:
        assert sum(r.kind == "line" for r in rows) >= 6
    assert {r.input_digest for r in server} == {rows_digest(HEAD, rows, charges=charges)}
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    assert rows_digest(HEAD, shuffled, charges=charges) == rows_digest(HEAD, rows, charges=charges)
    assert rows_digest(HEAD + "x", rows, charges=charges) != rows_digest(HEAD, rows, charges=charges)
    assert rows_digest(HEAD, rows[1:], charges=charges) != rows_digest(HEAD, rows, charges=charges)


def test_a_row_without_a_version_is_not_digested_by_the_worker(db: Engine) -> None:
    params = _seed(db, "invoice_only", "sub_unversioned")
    with db.begin() as conn:
        rows = execute_on_cursor(conn, _READ_VERSIONED, params)
    line = next(r for r in rows if r.kind == "line")
    stripped = [r._replace(row_version=None) if r is line else r for r in rows]
    assert rows_digest(HEAD, stripped, charges=False) is None  # Postgres digests it as a random text: nothing recorded


def test_no_rows_digest_as_postgres_digests_none() -> None:
    assert rows_digest(HEAD, [], charges=False) == hashlib.md5(f"{HEAD}|".encode()).hexdigest()
