"""The diff of docs/credits.md §3.4: charge targets against live charges, as creates, shrinks, extends and deletes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from worker.domain.charges.items import ChargeItem
from worker.domain.charges.targets import ChargeTarget
from worker.domain.errors import DuplicateIdentityError
from worker.domain.timeutil import trunc

# --- diff (docs/credits.md §3.4) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargeCreate:
    identity: str
    target: ChargeTarget
    reason: Literal["create"] = "create"


@dataclass(frozen=True, slots=True)
class ChargeUpdate:
    """Shrink or extend: the four end fields from the target; only the service end names the op."""

    identity: str
    item: ChargeItem
    target: ChargeTarget
    reason: Literal["shrink", "extend"]


@dataclass(frozen=True, slots=True)
class ChargeDelete:
    identity: str
    item: ChargeItem
    reason: Literal["delete"] = "delete"


ChargePatch = ChargeCreate | ChargeUpdate | ChargeDelete


def plan_charges(targets: Iterable[ChargeTarget], charges: Mapping[str, ChargeItem]) -> tuple[ChargePatch, ...]:
    """Deletes, shrinks and extends in docs/sync.md §5.2 order (removed identities ascending, then targeted ones),
    then creates in ascending identity order (upstream: a delete may free an identity a create reuses)."""
    by_identity: dict[str, ChargeTarget] = {}
    for t in targets:
        if t.identity in by_identity:
            raise DuplicateIdentityError(f"two charge targets have the unique reference id {t.identity!r}")
        by_identity[t.identity] = t
    changes: list[ChargePatch] = [ChargeDelete(i, charges[i]) for i in sorted(charges) if i not in by_identity]
    creates: list[ChargePatch] = []
    for identity in sorted(by_identity):
        target = by_identity[identity]
        item = charges.get(identity)
        if item is None:
            creates.append(ChargeCreate(identity, target))
            continue
        new_end, old_end = trunc(target.service_period.end), trunc(item.charge.service_period.end)
        if new_end < old_end:
            changes.append(ChargeUpdate(identity, item, target, "shrink"))
        elif new_end > old_end:
            changes.append(ChargeUpdate(identity, item, target, "extend"))
    return tuple(changes + creates)
