"""Loading the subscription view (docs/sync.md §2.1) in two queries: the subscription with its customer (and,
for a sync, the customer lock), then its live phases with their live items."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Text, and_, bindparam, func, literal_column, or_, select

from worker.domain.prices import price_from_json
from worker.domain.reuse import DecisionToken
from worker.domain.sync_state import SyncState
from worker.domain.timeutil import Duration
from worker.domain.view import ItemRecord, PhaseRecord, RateCard, SubscriptionRecord
from worker.errors import InvalidSubscriptionError, NotFoundError
from worker.store.db import execute_on_cursor
from worker.store.json_text import object_from_text
from worker.store.locks import DEFAULT_LOCK_TIMEOUT, customer_lock_key_sql
from worker.store.row_versions import row_versions
from worker.store.sync_state import recorded_decision
from worker.store.tables import (
    customers,
    subscription_items,
    subscription_phases,
    subscription_sync_states,
    subscriptions,
)


@dataclass(frozen=True, slots=True)
class LoadedSubscription:
    record: SubscriptionRecord
    deleted_at: datetime | None
    customer_exists: bool
    customer_deleted_at: datetime | None
    settlement_mode: str = "invoice_only"  # docs/credits.md §2.1
    head_version: str = ""  # the versions of the subscription and customer rows read (docs/sync.md §8.6)
    sync_state: SyncState | None = None  # the stored one (docs/sync.md §7); None before the first sync
    decision: DecisionToken | None = None  # the recorded reusable decision (docs/sync.md §8.6), if any
    recorded_head: str | None = None  # the input head the last sync recorded (docs/sync.md §8.6), if any

    def is_deleted(self, now: datetime) -> bool:
        return self.deleted_at is not None and self.deleted_at <= now


# Statements are built once, at import: building a SQLAlchemy construct and its cache key costs
# 60-130 µs per statement and call, a tenth of a small steady-state sync (measured with bench/).
_s, _c, _st = subscriptions, customers, subscription_sync_states
_SUBSCRIPTION = (
    select(
        _s,
        _c.c.id.label("customer_row_id"),
        _c.c.deleted_at.label("customer_deleted_at"),
        _st.c.has_billables.label("state_has_billables"),
        _st.c.next_sync_after.label("state_next_sync_after"),
        _st.c.decision_digest,
        _st.c.decision_holds_from,
        _st.c.decision_holds_until,
        # docs/sync.md §8.6: the versions of the subscription and customer rows this read, in the digest of the
        # decision (the subscription row is share-locked: its version holds until the transaction ends).
        literal_column(row_versions("subscriptions", "customers")).label("head_version"),
    )
    .select_from(
        _s.outerjoin(_c, and_(_c.c.namespace == _s.c.namespace, _c.c.id == _s.c.customer_id)).outerjoin(
            _st, and_(_st.c.namespace == _s.c.namespace, _st.c.subscription_id == _s.c.id)
        )
    )
    .where(_s.c.namespace == bindparam("namespace"), _s.c.id == bindparam("subscription_id"))
    # FOR SHARE: a concurrent `subscriptions apply` (which locks the row) either finished before
    # this read or waits for this transaction, so phases and items are read from one version.
    .with_for_update(read=True, of=_s)
)
#: `work_mem` of a sync's transaction (see `_SUBSCRIPTION_AND_LOCK`): a 10,004-line read fits with room to spare.
SYNC_WORK_MEM = "16MB"

# The same read, then the customer lock (docs/sync.md §6.1) in the same statement: one round trip less
# (~0.4 ms of a small steady-state sync, measured with bench/). The share-locked row is a MATERIALIZED
# CTE, so the customer lock is taken once, after the row lock, in the order of `load_subscription` then
# `lock_customer`; `set_config` comes first, so the customer-lock wait is bounded like `lock_customer`'s.
# The second `set_config` makes the rest of the sync's transaction run its prepared statements on generic plans
# (docs/performance.md "Generic plans for the sync's read"): left to itself, Postgres planned the sync's one read
# again at every execution (0.5-1 ms), because on tables holding subscriptions of very different sizes its generic
# row estimates — averages over them — cost more than the custom ones, although both plans have the same shape.
_LOCKED_ROW = _SUBSCRIPTION.cte("subscription").prefix_with("MATERIALIZED")
_SUBSCRIPTION_AND_LOCK = select(
    _LOCKED_ROW,
    func.set_config(literal_column("'lock_timeout'"), bindparam("lock_timeout"), literal_column("true")).label(
        "lock_timeout"
    ),
    func.set_config(
        literal_column("'plan_cache_mode'"),
        literal_column("'force_generic_plan'"),
        literal_column("true"),
    ).label("plan_cache_mode"),
    # The sync's read materializes its lines, and a digested read all its rows (worker.store.snapshot). With
    # Postgres' default 4 MB, a 10,004-line read put both through temporary files (5 MB written and read again,
    # ~4 ms of server time; docs/performance.md "The digest of a read with nothing to compare"). For this
    # transaction only.
    func.set_config(literal_column("'work_mem'"), literal_column(f"'{SYNC_WORK_MEM}'"), literal_column("true")).label(
        "work_mem"
    ),
    func.pg_advisory_xact_lock(customer_lock_key_sql(_LOCKED_ROW.c.namespace, _LOCKED_ROW.c.customer_id)).label(
        "locked"
    ),
)


def load_subscription(conn: Connection, namespace: str, subscription_id: str) -> LoadedSubscription:
    """The subscription row, soft-deleted or not, with its customer's deletion time; the row is
    share-locked until the end of the transaction."""
    row = conn.execute(_SUBSCRIPTION, {"namespace": namespace, "subscription_id": subscription_id}).one_or_none()
    return _loaded(row, namespace, subscription_id)


def load_and_lock_subscription(
    conn: Connection, namespace: str, subscription_id: str, lock_timeout: str = DEFAULT_LOCK_TIMEOUT
) -> LoadedSubscription:
    """`load_subscription`, then the lock of its customer (`worker.store.locks.lock_customer`), both held
    until the transaction ends, in one statement."""
    rows = execute_on_cursor(
        conn,
        _SUBSCRIPTION_AND_LOCK,
        {"namespace": namespace, "subscription_id": subscription_id, "lock_timeout": lock_timeout},
    )
    return _loaded(rows[0] if rows else None, namespace, subscription_id)


def _loaded(row: Any, namespace: str, subscription_id: str) -> LoadedSubscription:
    if row is None:
        raise NotFoundError(f"subscription {subscription_id!r} not found in namespace {namespace!r}")
    record = SubscriptionRecord(
        namespace=row.namespace,
        id=row.id,
        customer_id=row.customer_id,
        currency=row.currency,
        billing_cadence=_stored(Duration.parse, row.billing_cadence, row.id, "billing_cadence"),
        billing_anchor=row.billing_anchor,
        pro_rating_enabled=row.pro_rating_enabled,
        pro_rating_mode=row.pro_rating_mode,
        active_from=row.active_from,
        active_to=row.active_to,
    )
    state: SyncState | None = None
    decision: DecisionToken | None = None
    recorded_head: str | None = None
    if row.state_has_billables is not None:
        state = SyncState(row.state_has_billables, row.state_next_sync_after)
        recorded_head, decision = recorded_decision(
            row.decision_digest, row.decision_holds_from, row.decision_holds_until
        )
    return LoadedSubscription(
        record,
        row.deleted_at,
        row.customer_row_id is not None,
        row.customer_deleted_at,
        row.settlement_mode,
        head_version=row.head_version,
        sync_state=state,
        decision=decision,
        recorded_head=recorded_head,
    )


_p, _i = subscription_phases, subscription_items
_PHASE_ITEM_COLUMNS = (
    _p.c.id.label("phase_id"),
    _p.c.key.label("phase_key"),
    _p.c.name.label("phase_name"),
    _p.c.active_from.label("phase_from"),
    _p.c.sort_hint.label("phase_sort_hint"),
    _i.c.id.label("item_id"),
    _i.c.key.label("item_key"),
    _i.c.active_from.label("item_from"),
    _i.c.active_to.label("item_to"),
    _i.c.annotations.cast(Text).label("item_annotations"),  # JSON as text: worker.store.json_text
    _i.c.rate_card.cast(Text).label("item_rate_card"),  # as text: `rate_card_from_text`
)
_LIVE_PHASE = or_(_p.c.deleted_at.is_(None), _p.c.deleted_at > bindparam("now"))
_LIVE_ITEM = and_(
    _i.c.namespace == _p.c.namespace,
    _i.c.phase_id == _p.c.id,
    or_(_i.c.deleted_at.is_(None), _i.c.deleted_at > bindparam("now")),
)
_PHASES = (
    select(*_PHASE_ITEM_COLUMNS)
    .select_from(_p.outerjoin(_i, _LIVE_ITEM))
    .where(_p.c.namespace == bindparam("namespace"), _p.c.subscription_id == bindparam("subscription_id"), _LIVE_PHASE)
)


#: The phase-and-item read as a Core select (worker.store.snapshot folds it into a sync's one read), with the
#: versions of the phase and item rows of each (docs/sync.md §8.6 digests them instead of their columns).
PHASES_SELECT = _PHASES.add_columns(
    literal_column(row_versions("subscription_phases", "subscription_items")).label("phase_row_version")
)


def load_phases(conn: Connection, namespace: str, subscription_id: str, now: datetime) -> list[PhaseRecord]:
    """Phases and item versions not deleted as of `now`, in one query."""
    rows = conn.execute(_PHASES, {"namespace": namespace, "subscription_id": subscription_id, "now": now}).all()
    return phases_from_rows(rows, subscription_id)


def phases_from_rows(rows: Iterable[Any], subscription_id: str) -> list[PhaseRecord]:
    """Phase records from rows of `PHASES_SELECT` (one per phase and live item, or per phase without items)."""
    heads: dict[str, Any] = {}
    items: dict[str, list[ItemRecord]] = {}
    for row in rows:
        heads.setdefault(row.phase_id, row)
        bucket = items.setdefault(row.phase_id, [])
        if row.item_id is not None:
            bucket.append(
                ItemRecord(
                    id=row.item_id,
                    key=row.item_key,
                    active_from=row.item_from,
                    active_to=row.item_to,
                    rate_card=_stored(
                        rate_card_from_text,
                        row.item_rate_card,
                        subscription_id,
                        f"phases[key={row.phase_key}].items.{row.item_key}[id={row.item_id}].rate_card",
                    ),
                    annotations=object_from_text(row.item_annotations),
                )
            )
    return [
        PhaseRecord(h.phase_id, h.phase_key, h.phase_name, h.phase_from, h.phase_sort_hint, tuple(items[pid]))
        for pid, h in heads.items()
    ]


_T = TypeVar("_T")
_V = TypeVar("_V")


def _stored(read: Callable[[_V], _T], value: _V, subscription_id: str, field: str) -> _T:
    """A stored value read back; one written before a rule of docs/contract.md §3 (e.g. a duration with
    non-ASCII digits, docs/contract.md §3) fails the sync at once with the field named, never retried."""
    try:
        return read(value)
    except ValueError as exc:
        raise InvalidSubscriptionError(
            f"subscription {subscription_id!r} cannot be synced: stored {field} {exc} "
            "(docs/contract.md §3 limits); apply a corrected document"
        ) from None


@functools.lru_cache(maxsize=2048)
def rate_card_from_text(text: str) -> RateCard:
    """A stored rate card (a `jsonb` cell read as text), parsed once per distinct text in this process: a sync
    reads every item version's card, and subscriptions of one plan share theirs, so a worker parses each once
    instead of at every sync (docs/performance.md "Rate cards parsed once per process"). Shared between syncs and threads:
    a `RateCard` is frozen and nothing mutates the mappings it holds (the domain is pure)."""
    return rate_card_from_json(json.loads(text))


def rate_card_from_json(data: Mapping[str, Any]) -> RateCard:
    cadence = data.get("billing_cadence")
    return RateCard(
        name=data["name"],
        description=data.get("description"),
        feature_key=data.get("feature_key"),
        billing_cadence=Duration.parse(cadence) if cadence else None,
        price=price_from_json(data.get("price")),
        discounts=data.get("discounts"),
        tax_config=data.get("tax_config"),
    )
