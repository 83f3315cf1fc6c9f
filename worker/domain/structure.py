"""The structural rules of a subscription (docs/contract.md §3 "Structure: accepted means syncable"): what a
subscription must be so that its target (docs/sync.md §3) can always be built, at any `as_of`.

Each rule names a way a sync would otherwise fail every time (docs/sync.md §2.5 checks, §3.5, §6.2) or bill
what no phase holds. The document validation refuses a document that breaks one (exit 2, nothing
written); a subscription stored before a rule existed fails its syncs with the rule named, never
retried (`worker.errors.InvalidSubscriptionError`).

The rules read only starts and ends, so they do not depend on the docs/sync.md §2.1 phase order: a version
must start before the *next later* phase start, and a phase that shares its start with a later-sorted
phase is zero-length (docs/sync.md §2.2) and never generates anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from worker.domain.prices import FlatPrice, Price
from worker.domain.timeutil import format_instant
from worker.domain.view import PhaseRecord, SubscriptionRecord


class Rule(StrEnum):
    """The rules, by the name printed in errors and listed in docs/contract.md §3."""

    PHASES = "phases"  # at least one phase
    COVERED = "phase-coverage"  # the earliest phase starts at or before the subscription
    IN_PHASE = "version-in-phase"  # a version starts within its phase
    IN_SUBSCRIPTION = "version-in-subscription"  # a version starts at or after the subscription
    ONE_TIME_PRICE = "one-time-price"  # a one-time item has a flat price or none
    ONE_TIME_LENGTH = "one-time-length"  # a priced one-time version is not zero-length
    FEATURE_KEY = "usage-feature-key"  # a usage-based price has a feature key


@dataclass(frozen=True, slots=True)
class VersionShape:
    """What the rules read of an item version. `path` names it (`phases[0].items.fee[1]`)."""

    path: str
    active_from: datetime
    active_to: datetime | None
    one_time: bool
    price_type: str | None  # None (not billable), "flat", or a usage-based type
    has_feature_key: bool


@dataclass(frozen=True, slots=True)
class PhaseShape:
    path: str
    active_from: datetime
    versions: Sequence[VersionShape]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: the field (`path`, relative to the subscription) and why."""

    rule: Rule
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (rule {self.rule})"


def violations(active_from: datetime, phases: Sequence[PhaseShape]) -> list[Violation]:
    """Every structural rule `(active_from, phases)` breaks, in document order."""
    if not phases:
        return [Violation(Rule.PHASES, "phases", "must list at least one phase")]
    out: list[Violation] = []
    earliest = min(phases, key=lambda p: p.active_from)
    if earliest.active_from > active_from:
        out.append(
            Violation(
                Rule.COVERED,
                f"{earliest.path}.active_from",
                f"the earliest phase must start at or before the subscription's active_from "
                f"({format_instant(active_from)}): no instant of the subscription may be without a phase",
            )
        )
    starts = sorted({p.active_from for p in phases})
    for phase in phases:
        later = [s for s in starts if s > phase.active_from]
        next_start = later[0] if later else None
        for version in phase.versions:
            out += _version_violations(active_from, phase, next_start, version)
    return out


def _version_violations(
    active_from: datetime, phase: PhaseShape, next_start: datetime | None, version: VersionShape
) -> list[Violation]:
    out: list[Violation] = []
    start = f"{version.path}.active_from"
    if version.active_from < phase.active_from:
        out.append(
            Violation(
                Rule.IN_PHASE,
                start,
                f"must not be before its phase's active_from ({format_instant(phase.active_from)})",
            )
        )
    elif next_start is not None and version.active_from >= next_start:
        out.append(
            Violation(
                Rule.IN_PHASE,
                start,
                f"must be before the next phase starts ({format_instant(next_start)}): "
                "a version belongs to the phase it starts in",
            )
        )
    if version.active_from < active_from:
        out.append(
            Violation(
                Rule.IN_SUBSCRIPTION,
                start,
                f"must not be before the subscription's active_from ({format_instant(active_from)})",
            )
        )
    if version.price_type is not None:
        card = f"{version.path}.rate_card"
        if version.one_time and version.price_type != "flat":
            out.append(
                Violation(
                    Rule.ONE_TIME_PRICE,
                    f"{card}.price",
                    "a one-time item (billing_cadence null) takes a flat price or none, "
                    f"not a usage-based one ({version.price_type})",
                )
            )
        if version.one_time and version.active_to is not None and version.active_to <= version.active_from:
            out.append(
                Violation(
                    Rule.ONE_TIME_LENGTH,
                    f"{version.path}.active_to",
                    "must be after active_from: a one-time item with a price cannot be zero-length "
                    "(its service period would be empty once the phase ends)",
                )
            )
        if version.price_type != "flat" and not version.has_feature_key:
            out.append(
                Violation(
                    Rule.FEATURE_KEY,
                    f"{card}.feature_key",
                    f"is required with a usage-based price ({version.price_type})",
                )
            )
    return out


def stored_violations(record: SubscriptionRecord, phases: Sequence[PhaseRecord]) -> list[Violation]:
    """The rules over a stored subscription (what a sync loads, docs/sync.md §2.1); versions are named by phase
    key, item key and row id (`phases[key=default].items.fee[id=it_01]`)."""
    shapes = [
        PhaseShape(
            f"phases[key={phase.key}]",
            phase.active_from,
            [
                VersionShape(
                    f"phases[key={phase.key}].items.{item.key}[id={item.id}]",
                    item.active_from,
                    item.active_to,
                    item.rate_card.billing_cadence is None,
                    _price_type(item.rate_card.price),
                    bool(item.rate_card.feature_key),
                )
                for item in phase.items
            ],
        )
        for phase in phases
    ]
    return violations(record.active_from, shapes)


def _price_type(price: Price | None) -> str | None:
    if price is None:
        return None
    return "flat" if isinstance(price, FlatPrice) else price.type
