"""Write, read and soft-delete subscription documents (subscriptions + phases + items).

`apply_subscription` replaces the stored subscription with the document in the caller's
transaction. Ids are stable: a document without ids reuses the ids of the stored phase with
the same key and of the stored item version at the same position of the same key
(`worker.store.subscription_ids`); rows of
that subscription that the document no longer has are physically deleted (these tables are
owned by the subscription service, which keeps its own history).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from worker.contract.document_json import rate_card_to_json
from worker.contract.documents import STORED, SubscriptionDocument
from worker.contract.problems import DocumentError, Problem, format_validation_error
from worker.errors import ConflictError, NotFoundError, SubsyncError
from worker.infra.ids import new_id
from worker.store.customers import get_customer
from worker.store.subscription_ids import check_ownership, existing_ids, ids_param, with_ids
from worker.store.tables import subscription_items, subscription_phases, subscriptions

_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    document: SubscriptionDocument
    created: bool | None  # set by apply: whether the subscription was new
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _chunks(rows: Sequence[dict[str, Any]], size: int = _CHUNK) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- apply -------------------------------------------------------------------------------------


def apply_subscription(conn: Connection, document: SubscriptionDocument) -> StoredSubscription:
    """Insert or replace the subscription described by a validated document.

    Runs in the caller's transaction (use `engine.begin()`); on any error nothing should be
    committed. Returns the stored document with every id filled in.
    Raises NotFoundError (customer missing), ConflictError (an id owned by another subscription) or
    DocumentError (the document changes the stored customer or currency, docs/contract.md §3 limits: identity).
    """
    namespace = document.namespace
    if get_customer(conn, namespace, document.customer_id, for_share=True) is None:
        if document.id is not None:
            _check_identity(conn, document, document.id)  # the clearer error when both apply
        raise NotFoundError(
            f"customer {document.customer_id!r} does not exist in namespace {namespace!r}"
            " (create it first: subsync customers upsert)"
        )
    subscription_id = document.id or new_id("sub")
    upserted = _upsert_subscription_row(conn, document, subscription_id)
    if upserted is None:  # the stored row (locked by the upsert) has another customer or currency
        _check_identity(conn, document, subscription_id)
        raise AssertionError("the upsert refused a row whose customer and currency match")
    created, created_at, updated_at = upserted

    existing_phase_ids, existing_item_ids = existing_ids(conn, namespace, subscription_id)
    resolved = with_ids(document, subscription_id, existing_phase_ids, existing_item_ids)
    check_ownership(conn, resolved, subscription_id)

    phase_rows, item_rows = _rows(resolved, subscription_id)
    _upsert_phases(conn, namespace, subscription_id, phase_rows)
    _upsert_items(conn, namespace, subscription_id, item_rows)
    _delete_missing(conn, namespace, subscription_id, [r["id"] for r in phase_rows], [r["id"] for r in item_rows])
    return StoredSubscription(
        document=resolved, created=created, deleted_at=None, created_at=created_at, updated_at=updated_at
    )


def _check_identity(conn: Connection, document: SubscriptionDocument, subscription_id: str) -> None:
    """docs/contract.md §3 limits: a stored subscription (soft-deleted or not) keeps its customer and currency;
    a document that changes them is refused (exit 2), naming the field."""
    stored = conn.execute(
        select(subscriptions.c.customer_id, subscriptions.c.currency, subscriptions.c.settlement_mode).where(
            subscriptions.c.namespace == document.namespace, subscriptions.c.id == subscription_id
        )
    ).one_or_none()
    if stored is None:
        return
    problems = [
        Problem(field, f"cannot change the {what} of subscription {subscription_id} (stored: {old}, given: {new})")
        for field, what, old, new in (
            ("customer_id", "customer", stored.customer_id, document.customer_id),
            ("currency", "currency", stored.currency, document.currency),
            # docs/credits.md §2.1
            ("settlement_mode", "settlement mode", stored.settlement_mode, document.settlement_mode),
        )
        if old != new
    ]
    if problems:
        raise DocumentError(problems)


def _upsert_subscription_row(
    conn: Connection, document: SubscriptionDocument, subscription_id: str
) -> tuple[bool, datetime, datetime] | None:
    """Insert or replace the row; None (nothing written, the row locked) when the stored row has another
    customer or currency."""
    values = {
        "namespace": document.namespace,
        "id": subscription_id,
        "customer_id": document.customer_id,
        "name": document.name if document.name is not None else subscription_id,
        "currency": document.currency,
        "billing_cadence": document.billing_cadence,
        "billing_anchor": document.billing_anchor,
        "pro_rating_enabled": document.pro_rating.enabled,
        "pro_rating_mode": document.pro_rating.mode,
        "active_from": document.active_from,
        "active_to": document.active_to,
        "settlement_mode": document.settlement_mode,
        "deleted_at": None,
    }
    new_row = insert(subscriptions).values(**values)
    replaced = {key: new_row.excluded[key] for key in values if key not in ("namespace", "id")}
    statement = new_row.on_conflict_do_update(
        index_elements=[subscriptions.c.namespace, subscriptions.c.id],
        set_={**replaced, "updated_at": func.now()},
        # docs/contract.md §3 limits (identity): decided under the row lock the conflict takes, so no concurrent
        # apply can slip a change in between a check and the write.
        where=and_(
            subscriptions.c.customer_id == new_row.excluded.customer_id,
            subscriptions.c.currency == new_row.excluded.currency,
            subscriptions.c.settlement_mode == new_row.excluded.settlement_mode,
        ),
    ).returning(
        (subscriptions.c.created_at == subscriptions.c.updated_at).label("created"),
        subscriptions.c.created_at,
        subscriptions.c.updated_at,
    )
    # The upsert also locks the row, so concurrent applies of one subscription run one after another.
    row = conn.execute(statement).one_or_none()
    return None if row is None else (bool(row.created), row.created_at, row.updated_at)


def _rows(document: SubscriptionDocument, subscription_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    namespace = document.namespace
    phase_rows: list[dict[str, Any]] = []
    item_rows: list[dict[str, Any]] = []
    for phase in document.phases:
        assert phase.id is not None
        phase_rows.append(
            {
                "namespace": namespace,
                "id": phase.id,
                "subscription_id": subscription_id,
                "key": phase.key,
                "name": phase.name,
                "active_from": phase.active_from,
                "sort_hint": phase.sort_hint,
                "deleted_at": None,
            }
        )
        for key, versions in phase.items.items():
            for version in versions:
                assert version.id is not None
                item_rows.append(
                    {
                        "namespace": namespace,
                        "id": version.id,
                        "phase_id": phase.id,
                        "key": key,
                        "active_from": version.active_from,
                        "active_to": version.active_to,
                        "annotations": version.annotations,
                        "rate_card": rate_card_to_json(version.rate_card),
                        "deleted_at": None,
                    }
                )
    return phase_rows, item_rows


def _upsert_phases(conn: Connection, namespace: str, subscription_id: str, rows: list[dict[str, Any]]) -> None:
    for chunk in _chunks(rows):
        new_rows = insert(subscription_phases).values(list(chunk))
        excluded = new_rows.excluded
        statement = new_rows.on_conflict_do_update(
            index_elements=[subscription_phases.c.namespace, subscription_phases.c.id],
            set_={
                "key": excluded.key,
                "name": excluded.name,
                "active_from": excluded.active_from,
                "sort_hint": excluded.sort_hint,
                "deleted_at": excluded.deleted_at,
                "updated_at": func.now(),
            },
            # Never take over another subscription's phase (a concurrent writer may have inserted it).
            where=subscription_phases.c.subscription_id == excluded.subscription_id,
        ).returning(subscription_phases.c.id)
        written = conn.execute(statement).all()
        if len(written) != len(chunk):
            raise ConflictError(f"a phase id of subscription {subscription_id!r} belongs to another subscription")


def _upsert_items(conn: Connection, namespace: str, subscription_id: str, rows: list[dict[str, Any]]) -> None:
    own_phase_ids = select(subscription_phases.c.id).where(
        subscription_phases.c.namespace == namespace,
        subscription_phases.c.subscription_id == subscription_id,
    )
    for chunk in _chunks(rows):
        new_rows = insert(subscription_items).values(list(chunk))
        excluded = new_rows.excluded
        statement = new_rows.on_conflict_do_update(
            index_elements=[subscription_items.c.namespace, subscription_items.c.id],
            set_={
                "phase_id": excluded.phase_id,
                "key": excluded.key,
                "active_from": excluded.active_from,
                "active_to": excluded.active_to,
                "annotations": excluded.annotations,
                "rate_card": excluded.rate_card,
                "deleted_at": excluded.deleted_at,
                "updated_at": func.now(),
            },
            where=subscription_items.c.phase_id.in_(own_phase_ids.scalar_subquery()),
        ).returning(subscription_items.c.id)
        written = conn.execute(statement).all()
        if len(written) != len(chunk):
            raise ConflictError(f"an item id of subscription {subscription_id!r} belongs to another subscription")


def _delete_missing(
    conn: Connection, namespace: str, subscription_id: str, phase_ids: list[str], item_ids: list[str]
) -> None:
    own_phase_ids = select(subscription_phases.c.id).where(
        subscription_phases.c.namespace == namespace,
        subscription_phases.c.subscription_id == subscription_id,
    )
    conn.execute(
        subscription_items.delete().where(
            subscription_items.c.namespace == namespace,
            subscription_items.c.phase_id.in_(own_phase_ids.scalar_subquery()),
            ~(subscription_items.c.id == ids_param("keep_item_ids", item_ids)),
        )
    )
    conn.execute(
        subscription_phases.delete().where(
            subscription_phases.c.namespace == namespace,
            subscription_phases.c.subscription_id == subscription_id,
            ~(subscription_phases.c.id == ids_param("keep_phase_ids", phase_ids)),
        )
    )


# --- read --------------------------------------------------------------------------------------


def _live(column: Any) -> Any:
    return or_(column.is_(None), column > func.now())


def get_subscription(conn: Connection, namespace: str, subscription_id: str) -> StoredSubscription | None:
    """The stored subscription as a document (soft-deleted subscriptions included; phases and
    items deleted as of now are left out). None when there is no such subscription."""
    row = conn.execute(
        select(subscriptions).where(subscriptions.c.namespace == namespace, subscriptions.c.id == subscription_id)
    ).one_or_none()
    if row is None:
        return None
    phase_rows = conn.execute(
        select(subscription_phases)
        .where(
            subscription_phases.c.namespace == namespace,
            subscription_phases.c.subscription_id == subscription_id,
            _live(subscription_phases.c.deleted_at),
        )
        .order_by(
            subscription_phases.c.active_from,
            subscription_phases.c.sort_hint.asc().nulls_last(),
            subscription_phases.c.key,
            subscription_phases.c.id,
        )
    ).all()
    phase_ids = [phase.id for phase in phase_rows]
    item_rows = (
        conn.execute(
            select(subscription_items)
            .where(
                subscription_items.c.namespace == namespace,
                subscription_items.c.phase_id == ids_param("phase_ids", phase_ids),
                _live(subscription_items.c.deleted_at),
            )
            .order_by(
                subscription_items.c.key,
                subscription_items.c.active_from,
                subscription_items.c.active_to.asc().nulls_last(),
                subscription_items.c.id,
            )
        ).all()
        if phase_ids
        else []
    )
    items_by_phase: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for item in item_rows:
        items_by_phase[item.phase_id].setdefault(item.key, []).append(
            {
                "id": item.id,
                "active_from": item.active_from,
                "active_to": item.active_to,
                "annotations": item.annotations,
                "rate_card": item.rate_card,
            }
        )
    data = {
        "namespace": row.namespace,
        "id": row.id,
        "customer_id": row.customer_id,
        "name": row.name,
        "currency": row.currency,
        "billing_cadence": row.billing_cadence,
        "billing_anchor": row.billing_anchor,
        "pro_rating": {"enabled": row.pro_rating_enabled, "mode": row.pro_rating_mode},
        "active_from": row.active_from,
        "active_to": row.active_to,
        "settlement_mode": row.settlement_mode,
        "phases": [
            {
                "key": phase.key,
                "id": phase.id,
                "name": phase.name,
                "active_from": phase.active_from,
                "sort_hint": phase.sort_hint,
                "items": items_by_phase.get(phase.id, {}),
            }
            for phase in phase_rows
        ],
    }
    try:
        document = SubscriptionDocument.model_validate(data, context=STORED)
    except ValidationError as exc:
        problems = "; ".join(format_validation_error(exc)[:3])
        raise SubsyncError(f"stored subscription {subscription_id!r} is not a valid document: {problems}") from None
    return StoredSubscription(
        document=document,
        created=None,
        deleted_at=row.deleted_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# --- delete ------------------------------------------------------------------------------------


def delete_subscription(conn: Connection, namespace: str, subscription_id: str, at: datetime | None = None) -> datetime:
    """Soft-delete: set `deleted_at` to `at` (default: now). Returns the stored `deleted_at`."""
    statement = (
        update(subscriptions)
        .where(subscriptions.c.namespace == namespace, subscriptions.c.id == subscription_id)
        .values(deleted_at=at if at is not None else func.now(), updated_at=func.now())
        .returning(subscriptions.c.deleted_at)
    )
    deleted_at: datetime | None = conn.execute(statement).scalar_one_or_none()
    if deleted_at is None:
        raise NotFoundError(f"subscription {subscription_id!r} does not exist in namespace {namespace!r}")
    return deleted_at
