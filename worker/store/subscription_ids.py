"""Stable ids for an applied subscription document (docs/contract.md §3): a document without ids reuses
the ids of the stored phase with the same key and of the stored item version at the same position of the
same key; an explicit id owned by another subscription is refused."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, Connection, Text, and_, any_, bindparam, select

from worker.contract.documents import ItemVersion, Phase, SubscriptionDocument
from worker.errors import ConflictError
from worker.infra.ids import new_id
from worker.store.tables import subscription_items, subscription_phases


def ids_param(name: str, ids: Sequence[str]) -> Any:
    """`= ANY(:name)` with `ids` bound as one text array."""
    return any_(bindparam(name, list(ids), type_=ARRAY(Text)))


def existing_ids(
    conn: Connection, namespace: str, subscription_id: str
) -> tuple[dict[str, str], dict[tuple[str, str, int], str]]:
    """Stored phase ids by key, and item ids by (phase key, item key, version position)."""
    phases_by_key: dict[str, str] = {}
    phase_rows = conn.execute(
        select(subscription_phases.c.id, subscription_phases.c.key)
        .where(
            subscription_phases.c.namespace == namespace,
            subscription_phases.c.subscription_id == subscription_id,
        )
        .order_by(subscription_phases.c.active_from, subscription_phases.c.id)
        .with_for_update()
    )
    for phase_id, key in phase_rows:
        phases_by_key.setdefault(key, phase_id)

    items: dict[tuple[str, str, int], str] = {}
    positions: dict[tuple[str, str], int] = defaultdict(int)
    item_rows = conn.execute(
        select(subscription_items.c.id, subscription_phases.c.key, subscription_items.c.key)
        .join(
            subscription_phases,
            and_(
                subscription_phases.c.namespace == subscription_items.c.namespace,
                subscription_phases.c.id == subscription_items.c.phase_id,
            ),
        )
        .where(
            subscription_items.c.namespace == namespace,
            subscription_phases.c.subscription_id == subscription_id,
        )
        .order_by(
            subscription_phases.c.key,
            subscription_items.c.key,
            subscription_items.c.active_from,
            subscription_items.c.active_to.asc().nulls_last(),
            subscription_items.c.id,
        )
    )
    for item_id, phase_key, item_key in item_rows:
        position = positions[(phase_key, item_key)]
        positions[(phase_key, item_key)] += 1
        items[(phase_key, item_key, position)] = item_id
    return phases_by_key, items


def with_ids(
    document: SubscriptionDocument,
    subscription_id: str,
    existing_phase_ids: dict[str, str],
    existing_item_ids: dict[tuple[str, str, int], str],
) -> SubscriptionDocument:
    """The document with every id filled in: explicit ids kept, missing ones reused (unless another
    part of the document claims them) or new."""
    explicit_phase_ids = {phase.id for phase in document.phases if phase.id is not None}
    explicit_item_ids = {
        version.id
        for phase in document.phases
        for versions in phase.items.values()
        for version in versions
        if version.id is not None
    }
    phases: list[Phase] = []
    for phase in document.phases:
        phase_id = phase.id
        if phase_id is None:
            reused = existing_phase_ids.get(phase.key)
            phase_id = reused if reused is not None and reused not in explicit_phase_ids else new_id("ph")
        items: dict[str, list[ItemVersion]] = {}
        for key, versions in phase.items.items():
            resolved_versions = []
            for position, version in enumerate(versions):
                item_id = version.id
                if item_id is None:
                    reused = existing_item_ids.get((phase.key, key, position))
                    item_id = reused if reused is not None and reused not in explicit_item_ids else new_id("it")
                resolved_versions.append(version.model_copy(update={"id": item_id}))
            items[key] = resolved_versions
        phases.append(phase.model_copy(update={"id": phase_id, "items": items}))
    return document.model_copy(
        update={
            "id": subscription_id,
            "name": document.name if document.name is not None else subscription_id,
            "billing_anchor": document.billing_anchor,
            "phases": phases,
        }
    )


def check_ownership(conn: Connection, document: SubscriptionDocument, subscription_id: str) -> None:
    """ConflictError when an id of the document belongs to another subscription."""
    namespace = document.namespace
    phase_ids = [phase.id for phase in document.phases if phase.id is not None]
    if phase_ids:
        taken = conn.execute(
            select(subscription_phases.c.id, subscription_phases.c.subscription_id).where(
                subscription_phases.c.namespace == namespace,
                subscription_phases.c.id == ids_param("phase_ids", phase_ids),
                subscription_phases.c.subscription_id != subscription_id,
            )
        ).first()
        if taken is not None:
            raise ConflictError(f"phase id {taken.id!r} belongs to subscription {taken.subscription_id!r}")
    item_ids = [
        version.id
        for phase in document.phases
        for versions in phase.items.values()
        for version in versions
        if version.id is not None
    ]
    if item_ids:
        taken = conn.execute(
            select(subscription_items.c.id, subscription_phases.c.subscription_id)
            .join(
                subscription_phases,
                and_(
                    subscription_phases.c.namespace == subscription_items.c.namespace,
                    subscription_phases.c.id == subscription_items.c.phase_id,
                ),
            )
            .where(
                subscription_items.c.namespace == namespace,
                subscription_items.c.id == ids_param("item_ids", item_ids),
                subscription_phases.c.subscription_id != subscription_id,
            )
        ).first()
        if taken is not None:
            raise ConflictError(f"item id {taken.id!r} belongs to subscription {taken.subscription_id!r}")
