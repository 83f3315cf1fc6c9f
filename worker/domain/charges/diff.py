"""The diff of docs/credits.md §3.4: charge targets against live charges, as creates, shrinks, extends and deletes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from worker.domain.charges.items import ChargeIndex, ChargeItem
from worker.domain.charges.targets import ChargeCandidate, ChargeTarget
from worker.domain.errors import DuplicateIdentityError

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


def plan_charges(
    targets: Iterable[ChargeTarget | ChargeCandidate], charges: Mapping[str, ChargeItem]
) -> tuple[ChargePatch, ...]:
    """Deletes, shrinks and extends in docs/sync.md §5.2 order (removed identities ascending, then targeted ones),
    then creates in ascending identity order (upstream: a delete may free an identity a create reuses). Only the
    identity and the truncated service end are compared: a target or a charge is built only for a patch
    (`ChargeCandidate`, `ChargeIndex`)."""
    index = ChargeIndex.of(charges)
    by_identity: dict[str, ChargeTarget | ChargeCandidate] = {}
    for t in targets:
        if t.identity in by_identity:
            raise DuplicateIdentityError(f"two charge targets have the unique reference id {t.identity!r}")
        by_identity[t.identity] = t
    changes: list[ChargePatch] = [ChargeDelete(i, index[i]) for i in sorted(index) if i not in by_identity]
    creates: list[ChargePatch] = []
    heads = index.heads
    for identity in sorted(by_identity):
        wanted = by_identity[identity]
        head = heads.get(identity)
        if head is None:
            creates.append(ChargeCreate(identity, wanted.target()))
            continue
        new_end, old_end = wanted.service_end, head.service_end
        if new_end < old_end:
            changes.append(ChargeUpdate(identity, index[identity], wanted.target(), "shrink"))
        elif new_end > old_end:
            changes.append(ChargeUpdate(identity, index[identity], wanted.target(), "extend"))
    return tuple(changes + creates)
