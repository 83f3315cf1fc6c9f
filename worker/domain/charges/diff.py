"""The diff of docs/credits.md §3.4: charge targets against live charges, as creates, shrinks, extends and deletes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from worker.domain.charges.items import ChargeHead, ChargeIndex, ChargeItem
from worker.domain.charges.targets import ChargeCandidate, ChargeTarget
from worker.domain.errors import DuplicateIdentityError
from worker.domain.records import value

# --- diff (docs/credits.md §3.4) --------------------------------------------------------------------------


@value
class ChargeCreate:
    identity: str
    target: ChargeTarget
    reason: Literal["create"] = "create"


@value
class ChargeUpdate:
    """Shrink or extend: the four end fields from the target; only the service end names the op."""

    identity: str
    item: ChargeItem
    target: ChargeTarget
    reason: Literal["shrink", "extend"]


@value
class ChargeDelete:
    identity: str
    item: ChargeItem
    reason: Literal["delete"] = "delete"


ChargePatch = ChargeCreate | ChargeUpdate | ChargeDelete


@value
class ChargeChange:
    """One entry of the diff before any persisted charge is built (docs/credits.md §3.4): what happens to `identity`,
    and the target (none for a delete). `patches_of` turns changes into patches, building the persisted charges a
    shrink, an extend or a delete changes."""

    identity: str
    reason: Literal["create", "shrink", "extend", "delete"]
    wanted: ChargeTarget | ChargeCandidate | None = None


def charge_changes(
    targets: Iterable[ChargeTarget | ChargeCandidate], heads: Mapping[str, ChargeHead]
) -> tuple[ChargeChange, ...]:
    """Deletes, shrinks and extends in docs/sync.md §5.2 order (removed identities ascending, then targeted ones),
    then creates in ascending identity order (upstream: a delete may free an identity a create reuses). Only the
    identity and the truncated service end are compared, so the live charges' heads are enough."""
    by_identity: dict[str, ChargeTarget | ChargeCandidate] = {}
    for t in targets:
        if t.identity in by_identity:
            raise DuplicateIdentityError(f"two charge targets have the unique reference id {t.identity!r}")
        by_identity[t.identity] = t
    changes = [ChargeChange(i, "delete") for i in sorted(heads) if i not in by_identity]
    creates: list[ChargeChange] = []
    for identity in sorted(by_identity):
        wanted = by_identity[identity]
        head = heads.get(identity)
        if head is None:
            creates.append(ChargeChange(identity, "create", wanted))
            continue
        new_end, old_end = wanted.service_end, head.service_end
        if new_end < old_end:
            changes.append(ChargeChange(identity, "shrink", wanted))
        elif new_end > old_end:
            changes.append(ChargeChange(identity, "extend", wanted))
    return tuple(changes + creates)


def patches_of(changes: Iterable[ChargeChange], charges: Mapping[str, ChargeItem]) -> tuple[ChargePatch, ...]:
    """The patches of `changes`, in their order: a target or a charge is built only here, for a patch
    (`ChargeCandidate`, `ChargeIndex`)."""
    out: list[ChargePatch] = []
    for change in changes:
        identity, wanted = change.identity, change.wanted
        if change.reason == "delete":
            out.append(ChargeDelete(identity, charges[identity]))
        elif change.reason == "create":
            assert wanted is not None
            out.append(ChargeCreate(identity, wanted.target()))
        else:
            assert wanted is not None
            out.append(ChargeUpdate(identity, charges[identity], wanted.target(), change.reason))
    return tuple(out)


def plan_charges(
    targets: Iterable[ChargeTarget | ChargeCandidate], charges: Mapping[str, ChargeItem]
) -> tuple[ChargePatch, ...]:
    """docs/credits.md §3.4: `charge_changes` of the live charges, as patches."""
    index = ChargeIndex.of(charges)
    return patches_of(charge_changes(targets, index.heads), index)
