"""docs/sync.md §8.1 "Anatomy of a sync", step *load*: everything one sync reads, under the customer lock, into
an immutable `Snapshot` (worker.domain.snapshot).

Two statements whatever the number of lines and charges: the subscription with its stored sync state and the
customer lock (docs/sync.md §6.1), then one read of everything else, taken after the lock so that it sees what the lock holder committed:
the phases and items, the persisted lines, groups and invoices with the gathering invoice (docs/sync.md §4), and,
for a credit-mode subscription, its charges (docs/credits.md §3.3) — a sync (`load_for_sync`) their heads alone,
the others every column. An invoice_only subscription's read only says whether it has live charges (one it had
before a mode change); they are then read by a statement of their own. Only when needed come the sync issues of
immutable invoices (one, when a line or a charge run is on one) and the credit ledgers (one, when the decision's
charge patches touch a live run on a mutable invoice: docs/credits.md §3.3 reads allocation rows only for charges a
patch touches); after this load, a sync whose patches change charges read by their heads reads those in full (one:
`worker.store.charges.load_charge_items`, asked by `worker.domain.decide.ChargeItemsNeeded`).

The one read puts each part's rows side by side (`FULL JOIN … ON false`): a row is a persisted row (`kind` set),
a phase row (`phase_id` set) or a charge row (`c_id` set), the other parts' columns null."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Select, select, text
from sqlalchemy.dialects.postgresql.base import PGDialect

from worker.domain.charges.items import ChargeIndex
from worker.domain.charges.routing import SettlementMode
from worker.domain.decide import touched_runs
from worker.domain.reuse import DecisionToken
from worker.domain.snapshot import Snapshot
from worker.domain.view import SubscriptionRecord
from worker.infra.fingerprint import code_fingerprint
from worker.store.charges import (
    HEAD_COLUMNS,
    SUBSCRIPTION_CHARGES_SELECT,
    charges_from_rows,
    load_subscription_charges,
)
from worker.store.credits import load_sync_ledgers
from worker.store.db import execute_on_cursor
from worker.store.locks import DEFAULT_LOCK_TIMEOUT
from worker.store.persisted import PERSISTED_LINES_SQL, PERSISTED_SQL, load_issue_keys, persisted_rows_from
from worker.store.row_versions import without_row_versions
from worker.store.view import PHASES_SELECT, LoadedSubscription, load_and_lock_subscription, phases_from_rows

_NAMED = PGDialect(paramstyle="named")  # type: ignore[no-untyped-call]


def _sql(statement: Select[Any]) -> str:
    return str(statement.compile(dialect=_NAMED))


# Composed once, at import, of constant SQL only (every value is a bound parameter); see worker.store.view on the
# cost of building statements per call.
_charged = SUBSCRIPTION_CHARGES_SELECT.subquery("c")
_CHARGES_SQL = _sql(select(*[c.label(f"c_{c.name}") for c in _charged.c]))
# A sync reads the charges' heads alone (docs/performance.md "The charges' heads alone"); the laterals stay, for
# the heads' run columns and the row versions.
_CHARGE_HEADS_SQL = _sql(select(*[c.label(f"c_{c.name}") for c in _charged.c if c.name in HEAD_COLUMNS]))
_PHASED_SQL = "phased AS (" + _sql(PHASES_SELECT) + ")"
_READ_SQL = (
    "WITH persisted AS (" + PERSISTED_SQL + "), " + _PHASED_SQL + " SELECT * FROM persisted FULL JOIN phased ON false"
)
_READ_WITH_CHARGES_SQL = (  # the charges themselves, not whether there are any (worker.store.persisted)
    "WITH persisted AS ("
    + PERSISTED_LINES_SQL
    + "), "
    + _PHASED_SQL
    + ", charged AS ("
    + _CHARGES_SQL
    + ") SELECT * FROM persisted FULL JOIN phased ON false FULL JOIN charged ON false"
)
_READ_WITH_CHARGE_HEADS_SQL = _READ_WITH_CHARGES_SQL.replace(_CHARGES_SQL, _CHARGE_HEADS_SQL)


def _digested(read_sql: str, *, charges: bool) -> str:
    """docs/sync.md §8.6: `read_sql` (a WITH … SELECT) as one CTE, and in the same statement the digest of everything a
    decision reads: `:decision_head` (the versions of the subscription and customer rows the lock statement read,
    the stored state, the code and the line limit: `load_for_sync`) and every row of the read, each by the versions
    of the rows it comes from (`row_version`: worker.store.persisted, worker.store.charges, worker.store.view).
    Every row comes back with the digest; when it equals `:known_digest` only one row comes back, the digest alone
    (the other columns null). The versions are digested in byte order, whatever order the plan returns the rows in,
    so that `rows_digest` computes the same digest of the same rows in Python. A row without a version (none has
    one by construction) is digested as a random text, so that such a digest never matches: never a wrong reuse,
    and no whole-row text of every row to build (~3 ms of a 10,004-line read)."""
    head, _, select_all = read_sql.rpartition(" SELECT * FROM ")
    versions = "e.row_version, e.phase_row_version, " + ("e.c_row_version, " if charges else "")
    return (
        head
        + ", everything AS MATERIALIZED (SELECT * FROM "
        + select_all
        + "), digest AS MATERIALIZED (SELECT md5(CAST(:decision_head AS text) || '|' || coalesce((SELECT string_agg("
        + """v, '|' ORDER BY v COLLATE "C") FROM (SELECT coalesce("""
        + f"{versions}gen_random_uuid()::text) AS v FROM everything e) d), '')) AS input_digest)"
        + " SELECT everything.*, digest.input_digest FROM digest"
        + " LEFT JOIN everything ON digest.input_digest IS DISTINCT FROM CAST(:known_digest AS text)"
    )


def rows_digest(decision_head: str, rows: Sequence[Any], *, charges: bool) -> str | None:
    """The digest `_digested` computes in SQL, of the rows of the versioned read (`_READ_VERSIONED`,
    `_READ_WITH_CHARGE_HEADS_VERSIONED`): a sync with no recorded decision to compare reads its rows without the digest
    and digests their versions here (~0.3 µs a row, where the SQL digest made the server keep and read again every
    row: +17 ms of a 10,004-line read; docs/performance.md "The digest of a read with nothing to compare"). None
    when a row has no version (the SQL digests such a row as a random text): nothing is recorded then."""
    if not rows:
        return hashlib.md5(f"{decision_head}|".encode(), usedforsecurity=False).hexdigest()
    fields = rows[0]._fields
    line, phase = fields.index("row_version"), fields.index("phase_row_version")
    charge = fields.index("c_row_version") if charges else phase
    versions = [r[line] if r[line] is not None else r[phase] if r[phase] is not None else r[charge] for r in rows]
    if None in versions:
        return None
    versions.sort()  # str order is the UTF-8 byte order of COLLATE "C"
    return hashlib.md5(f"{decision_head}|{'|'.join(versions)}".encode(), usedforsecurity=False).hexdigest()


# Run on the psycopg cursor (worker.store.db.execute_on_cursor): no SQLAlchemy result for ~50-100 wide rows.
_READ = text(without_row_versions(_READ_SQL))
_READ_WITH_CHARGES = text(without_row_versions(_READ_WITH_CHARGES_SQL))  # every column: dry runs, previews
_READ_WITH_CHARGE_HEADS = text(without_row_versions(_READ_WITH_CHARGE_HEADS_SQL))  # a sync's
_READ_VERSIONED = text(_READ_SQL)
_READ_WITH_CHARGE_HEADS_VERSIONED = text(_READ_WITH_CHARGE_HEADS_SQL)
_READ_DIGESTED = text(_digested(_READ_SQL, charges=False))
_READ_WITH_CHARGE_HEADS_DIGESTED = text(_digested(_READ_WITH_CHARGE_HEADS_SQL, charges=True))


@dataclass(frozen=True, slots=True)
class Reused:
    """What `load_for_sync` returns when the recorded decision holds (docs/sync.md §8.6): the locked subscription
    and its token; nothing else was read."""

    loaded: LoadedSubscription
    decision: DecisionToken
    as_of: datetime
    input_head: str


def load_snapshot(
    conn: Connection,
    namespace: str,
    subscription_id: str,
    *,
    now: datetime,
    as_of: datetime | Callable[[SubscriptionRecord], datetime] | None = None,
    max_target_lines: int | None = None,
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
) -> Snapshot:
    """`load_for_sync` without the digest: every part read, whatever was recorded (dry runs, preview, explain)."""
    loaded = _load(conn, namespace, subscription_id, now, as_of, max_target_lines, lock_timeout, reuse=False)
    assert isinstance(loaded, Snapshot)
    return loaded


def load_for_sync(
    conn: Connection,
    namespace: str,
    subscription_id: str,
    *,
    now: datetime,
    as_of: datetime | Callable[[SubscriptionRecord], datetime],
    max_target_lines: int | None,
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
) -> Snapshot | Reused:
    """Lock the subscription's customer (docs/sync.md §6.1) and read what a sync of it at `now` decides on.
    NotFoundError when there is no such subscription; MissingInvoiceError when a line or a charge run names a
    missing invoice (docs/sync.md §4, docs/credits.md §3.3).

    Allocation rows (docs/credits.md §3.3) are read only for the runs the decision at `as_of` touches
    (`worker.domain.decide.touched_runs`; `as_of` may be a function of the locked row); without `as_of`, for every
    live run on a mutable invoice, so that the snapshot serves a decision at any time. Either way the ledgers are
    read only when some charge has such a run.

    The one read may also digest everything the decision reads (docs/sync.md §8.6, "When the read is digested"):
    the snapshot then carries the digest, and when the stored sync state records a decision whose `as_of` window
    covers this one with the same digest, nothing else is read and `Reused` is returned instead."""
    return _load(conn, namespace, subscription_id, now, as_of, max_target_lines, lock_timeout, reuse=True)


def _load(
    conn: Connection,
    namespace: str,
    subscription_id: str,
    now: datetime,
    as_of: datetime | Callable[[SubscriptionRecord], datetime] | None,
    max_target_lines: int | None,
    lock_timeout: str,
    *,
    reuse: bool,
) -> Snapshot | Reused:
    loaded = load_and_lock_subscription(conn, namespace, subscription_id, lock_timeout)
    record = loaded.record
    mode = cast(SettlementMode, loaded.settlement_mode)  # the column's check: one of SETTLEMENT_MODES
    params: dict[str, Any] = {
        "namespace": namespace,
        "subscription_id": subscription_id,
        "customer_id": record.customer_id,
        "currency": record.currency,
        "now": now,
    }
    digest = input_head = None
    rows: list[Any] | None = None
    if reuse:
        assert as_of is not None
        at = as_of(record) if callable(as_of) else as_of
        state, recorded = loaded.sync_state, loaded.decision
        core = f"{loaded.head_version}|{code_fingerprint()}|{max_target_lines}"
        input_head = hashlib.md5(core.encode(), usedforsecurity=False).hexdigest()
        stored = "-" if state is None else f"{state.has_billables}/{state.next_sync_after}"
        # Digest the read only when this decision may be recorded or reused (docs/sync.md §8.6, "When the read is
        # digested"): the inputs outside the read are those the last sync recorded, and its window covers `at`.
        if loaded.recorded_head == input_head and (recorded is None or recorded.covers(at)):
            known = recorded if recorded is not None and not loaded.is_deleted(now) else None
            decision_head = f"{core}|{stored}"
            if known is None:  # nothing to compare: digest the rows here, to record (`rows_digest`)
                versioned = _READ_VERSIONED if mode == "invoice_only" else _READ_WITH_CHARGE_HEADS_VERSIONED
                rows = execute_on_cursor(conn, versioned, params)
                digest = rows_digest(decision_head, rows, charges=mode != "invoice_only")
            else:
                params["decision_head"], params["known_digest"] = decision_head, known.digest
                statement = _READ_DIGESTED if mode == "invoice_only" else _READ_WITH_CHARGE_HEADS_DIGESTED
                rows = execute_on_cursor(conn, statement, params)
                digest = rows[0].input_digest
                if digest == known.digest:
                    return Reused(loaded, known, at, input_head)
    if rows is None:  # nothing recorded or reusable: read without the versions
        charged = _READ_WITH_CHARGE_HEADS if reuse else _READ_WITH_CHARGES  # a sync reads the charges' heads alone
        rows = execute_on_cursor(conn, _READ if mode == "invoice_only" else charged, params)
    persisted = persisted_rows_from([r for r in rows if r.kind is not None])
    phases = None
    if not loaded.is_deleted(now):
        phases = tuple(phases_from_rows([r for r in rows if r.phase_id is not None], subscription_id))
    charges = ChargeIndex(())
    if mode != "invoice_only":
        charges = charges_from_rows([r for r in rows if r.c_id is not None], "c_")
    elif persisted.has_charges:
        charges = ChargeIndex.of(load_subscription_charges(conn, namespace, subscription_id))
        digest = None  # read apart, not digested: such a decision is never reused
    immutable = {i.id for i in persisted.invoices if i.immutable}
    runs: dict[str, set[str]] = {}
    for head in charges.heads.values():
        if head.run_id is None:
            continue
        if head.run_immutable:
            assert head.run_invoice_id is not None
            immutable.add(head.run_invoice_id)
        else:
            runs.setdefault(head.currency, set()).add(head.run_id)
    issues = load_issue_keys(conn, namespace, immutable)
    snapshot = Snapshot(
        namespace=namespace,
        subscription=record,
        deleted_at=loaded.deleted_at,
        customer_exists=loaded.customer_exists,
        customer_deleted_at=loaded.customer_deleted_at,
        settlement_mode=mode,
        phases=phases,
        persisted=persisted.state(issues),
        gathering_invoice_id=persisted.gathering_invoice_id,
        charges=charges,
        ledgers={},
        sync_state=loaded.sync_state,
        input_digest=digest,
        input_head=input_head,
    )
    if runs and as_of is not None:
        at = as_of(record) if callable(as_of) else as_of
        runs = {
            c: set(r) for c, r in touched_runs(snapshot, as_of=at, now=now, max_target_lines=max_target_lines).items()
        }
    if not runs:
        return snapshot
    return replace(snapshot, ledgers=load_sync_ledgers(conn, namespace, record.customer_id, runs))
