"""The subscription document of docs/contract.md §3: parsing, validation and defaults
(the printed shape: `worker.contract.document_json`).

The pydantic models check every rule, reporting problems as `path: message` lines whose path names
the field the way a person reads the JSON (`phases[0].items.platform-fee[1].rate_card.price.amount`):
field rules through the field types (types, charsets, lengths, decimals, times, durations, currency
codes, price shapes, unknown fields), and the rules relating fields to each other as model validators
(`active_to` not before `active_from`, item versions sorted and not overlapping, distinct phase keys
and ids, limits on counts, `discounts.usage` only with usage-based prices). Pydantic collects them in
one round: a model whose fields are valid has its rules checked even when another part of the
document has problems. The model validators also apply the defaults, once, whoever validates.

A document that breaks any rule raises `DocumentError` and nothing is written. The field types are
in `worker.contract.fields`, the problem lines in `worker.contract.problems`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictBool,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from worker.contract.fields import (
    USAGE_PRICE_TYPES,
    Amount,
    Annotations,
    Currency,
    Duration,
    FreeJson,
    Id,
    Key,
    NotOnFlat,
    SortHint,
    Text,
    Time,
)
from worker.contract.problems import DocumentError, Problem, refuse, validation_problems
from worker.contract.text import format_time
from worker.domain import structure

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_PHASES = 1000
MAX_ITEM_VERSIONS = 10_000


# --- models ------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)


class FlatPrice(_Model):
    type: Literal["flat"]
    amount: Amount
    payment_term: Literal["in_advance", "in_arrears"] = "in_advance"
    # Declared only to explain the rule with a precise path; always None after validation.
    minimum_amount: NotOnFlat = Field(default=None, exclude=True)
    maximum_amount: NotOnFlat = Field(default=None, exclude=True)


class _UsagePrice(_Model):
    minimum_amount: Amount | None = None
    maximum_amount: Amount | None = None


class UnitPrice(_UsagePrice):
    type: Literal["unit"]
    amount: Amount


class PriceTier(_Model):
    up_to_amount: Amount | None = None
    flat_price: Amount | None = None
    unit_price: Amount | None = None


class TieredPrice(_UsagePrice):
    type: Literal["tiered"]
    mode: Literal["graduated", "volume"]
    tiers: list[PriceTier]


class PackagePrice(_UsagePrice):
    type: Literal["package"]
    amount: Amount
    quantity_per_package: Amount


class DynamicPrice(_UsagePrice):
    type: Literal["dynamic"]
    multiplier: Amount


Price = Annotated[
    FlatPrice | UnitPrice | TieredPrice | PackagePrice | DynamicPrice,
    Field(discriminator="type"),
]


class PercentageDiscount(_Model):
    percentage: Amount


class UsageDiscount(_Model):
    quantity: Amount


class Discounts(_Model):
    percentage: PercentageDiscount | None = None
    usage: UsageDiscount | None = None


class RateCard(_Model):
    name: Text | None = None  # defaults to the item key
    description: Text | None = None
    feature_key: Text | None = None
    billing_cadence: Duration | None  # required; null means a one-time item
    price: Price | None  # required; null means not billable
    discounts: Discounts | None = None
    tax_config: FreeJson = None


class ItemVersion(_Model):
    id: Id | None = None
    active_from: Time | None = None  # defaults to the phase's active_from
    active_to: Time | None = None
    annotations: Annotations | None = None
    rate_card: RateCard

    @model_validator(mode="after")
    def _rules(self) -> ItemVersion:
        problems: list[Problem] = []
        if self.active_to is not None and self.active_from is not None and self.active_to < self.active_from:
            problems.append(Problem("active_to", "must not be before active_from"))
        discounts, price = self.rate_card.discounts, self.rate_card.price
        usage_price = price is not None and price.type in USAGE_PRICE_TYPES
        if discounts is not None and discounts.usage is not None and not usage_price:
            problems.append(
                Problem(
                    "rate_card.discounts.usage",
                    "is allowed only with a usage-based price (unit, tiered, package, dynamic)",
                )
            )
        refuse(problems)
        return self


class Phase(_Model):
    key: Key
    id: Id | None = None
    name: Text | None = None  # defaults to the key
    active_from: Time
    sort_hint: SortHint | None = None
    items: dict[Key, list[ItemVersion]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rules_then_defaults(self) -> Phase:
        problems: list[Problem] = []
        for key, versions in self.items.items():
            if not versions:
                problems.append(Problem(f"items.{key}", "must list at least one item version"))
            for index in range(1, len(versions)):
                problem = self._ordering_problem(versions[index - 1], versions[index], index)
                if problem is not None:
                    problems.append(Problem(f"items.{key}[{index}].active_from", problem))
        refuse(problems)
        # The defaults of docs/contract.md §3, applied here once, whoever validates a document.
        self.name = self.key if self.name is None else self.name
        for key, versions in self.items.items():
            for version in versions:
                version.active_from = version.active_from or self.active_from
                version.annotations = {} if version.annotations is None else version.annotations
                version.rate_card.name = key if version.rate_card.name is None else version.rate_card.name
                version.rate_card.discounts = version.rate_card.discounts or Discounts()
        return self

    def _ordering_problem(self, previous: ItemVersion, current: ItemVersion, index: int) -> str | None:
        previous_from = previous.active_from or self.active_from
        current_from = current.active_from or self.active_from
        if current_from < previous_from:
            return f"versions must be sorted oldest first: starts before version [{index - 1}]"
        if previous.active_to is None or previous.active_to > current_from:
            ends = "never ends" if previous.active_to is None else f"ends {format_time(previous.active_to)}"
            return f"overlaps version [{index - 1}], which {ends}"
        return None


class ProRating(_Model):
    enabled: StrictBool = True
    mode: Literal["prorate_prices"] = "prorate_prices"


class SubscriptionDocument(_Model):
    namespace: Id
    id: Id | None = None
    customer_id: Id
    name: Text | None = None  # defaults to the id
    currency: Currency
    billing_cadence: Duration
    billing_anchor: Time | None = None  # defaults to active_from
    pro_rating: ProRating = Field(default_factory=ProRating)
    active_from: Time
    active_to: Time | None = None
    phases: list[Phase] = Field(default_factory=list, max_length=MAX_PHASES)
    # docs/credits.md §2.1
    settlement_mode: Literal["invoice_only", "credit_then_invoice", "credit_only"] = "invoice_only"

    def item_version_count(self) -> int:
        return sum(len(versions) for phase in self.phases for versions in phase.items.values())

    @model_validator(mode="wrap")
    @classmethod
    def _at_most_so_many_versions(cls, value: Any, handler: ModelWrapValidatorHandler[SubscriptionDocument]) -> Any:
        """A limit, checked before the item versions are: a document over it is refused on that alone."""
        versions_total = _raw_version_count(value)
        if versions_total > MAX_ITEM_VERSIONS:
            refuse([Problem("phases", f"has {versions_total} item versions; at most {MAX_ITEM_VERSIONS} are allowed")])
        return handler(value)

    @model_validator(mode="after")
    def _rules_then_defaults(self, info: ValidationInfo) -> SubscriptionDocument:
        problems: list[Problem] = []
        if self.active_to is not None and self.active_to < self.active_from:
            problems.append(Problem("active_to", "must not be before active_from"))
        problems += self._duplicate_ids()
        if not is_stored(info):  # a stored subscription that breaks a newer rule is still printed
            problems += [Problem(v.path, f"{v.message} (rule {v.rule})") for v in self.structure_violations()]
        refuse(problems)
        self.billing_anchor = self.billing_anchor or self.active_from  # the default of docs/contract.md §3
        return self

    def structure_violations(self) -> list[structure.Violation]:
        """The structural rules of docs/contract.md §3 (`worker.domain.structure`) over this document, with its
        defaults applied (a version without `active_from` starts with its phase)."""
        phases = [
            structure.PhaseShape(
                f"phases[{p_index}]",
                phase.active_from,
                [
                    structure.VersionShape(
                        f"phases[{p_index}].items.{key}[{v_index}]",
                        version.active_from or phase.active_from,
                        version.active_to,
                        version.rate_card.billing_cadence is None,
                        None if version.rate_card.price is None else version.rate_card.price.type,
                        bool(version.rate_card.feature_key),
                    )
                    for key, versions in phase.items.items()
                    for v_index, version in enumerate(versions)
                ],
            )
            for p_index, phase in enumerate(self.phases)
        ]
        return structure.violations(self.active_from, phases)

    def _duplicate_ids(self) -> list[Problem]:
        """Phase keys and ids, and item version ids, are each used once in a document."""
        problems: list[Problem] = []
        phase_keys: dict[str, int] = {}
        phase_ids: dict[str, int] = {}
        item_ids: dict[str, str] = {}
        for p_index, phase in enumerate(self.phases):
            phase_path = f"phases[{p_index}]"
            if phase.key in phase_keys:
                problems.append(
                    Problem(f"{phase_path}.key", f"{phase.key!r} is already used by phases[{phase_keys[phase.key]}]")
                )
            phase_keys.setdefault(phase.key, p_index)
            if phase.id is not None and phase.id in phase_ids:
                problems.append(
                    Problem(f"{phase_path}.id", f"{phase.id!r} is already used by phases[{phase_ids[phase.id]}]")
                )
            elif phase.id is not None:
                phase_ids[phase.id] = p_index
            for key, versions in phase.items.items():
                for v_index, version in enumerate(versions):
                    version_path = f"{phase_path}.items.{key}[{v_index}]"
                    if version.id is not None and version.id in item_ids:
                        problems.append(
                            Problem(f"{version_path}.id", f"{version.id!r} is already used by {item_ids[version.id]}")
                        )
                    elif version.id is not None:
                        item_ids[version.id] = version_path
        return problems


#: Validation context of a document read back from the tables (`validate_stored`).
STORED = {"stored": True}


def is_stored(info: ValidationInfo) -> bool:
    """Whether the document being validated was read back from the tables: written under earlier rules,
    it is checked for shape only, so that `subscriptions get` still prints it (docs/contract.md §3)."""
    return isinstance(info.context, Mapping) and bool(info.context.get("stored"))


def _raw_version_count(value: Any) -> int:
    """How many item versions a document not yet validated lists (what is not shaped right counts 0)."""
    if isinstance(value, SubscriptionDocument):
        return value.item_version_count()
    phases = value.get("phases") if isinstance(value, Mapping) else None
    if not isinstance(phases, list):
        return 0
    items = [phase.get("items") for phase in phases if isinstance(phase, Mapping)]
    return sum(len(v) for i in items if isinstance(i, Mapping) for v in i.values() if isinstance(v, list))


# --- parsing -----------------------------------------------------------------------------------


def parse_document(raw: bytes | str) -> SubscriptionDocument:
    """Parse JSON text and validate it. Raises DocumentError listing every problem found."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError([Problem("", f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} KiB")])
    try:
        value = json.loads(data, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        raise DocumentError([Problem("", f"duplicate key {exc.key!r} in a JSON object")]) from None
    except (ValueError, RecursionError) as exc:
        raise DocumentError([Problem("", f"not valid JSON ({exc})")]) from None
    return validate_document(value, size_checked=True)


def validate_document(value: Any, *, size_checked: bool = False) -> SubscriptionDocument:
    """Validate already-decoded JSON (a dict). Raises DocumentError listing every problem found."""
    if not isinstance(value, Mapping):
        raise DocumentError([Problem("", "the document must be a JSON object")])
    if not size_checked:
        try:
            size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
        except (TypeError, ValueError, RecursionError):
            size = 0
        if size > MAX_DOCUMENT_BYTES:
            raise DocumentError([Problem("", f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} KiB")])
    try:
        return SubscriptionDocument.model_validate(value)
    except ValidationError as exc:
        raise DocumentError(validation_problems(exc)) from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = item
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
