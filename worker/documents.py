"""The subscription document of CONTRACT §3: parsing, validation, defaults and the printed shape.

Validation happens in two passes, both reporting problems as `path: message` lines whose
path names the field the way a person reads the JSON
(`phases[0].items.platform-fee[1].rate_card.price.amount`):

1. field rules, enforced by the pydantic models (types, charsets, lengths, decimals, times,
   durations, currency codes, price shapes, unknown fields);
2. document rules that relate fields to each other (`active_to` not before `active_from`,
   item versions sorted and not overlapping, distinct phase keys and ids, limits on counts,
   `discounts.usage` only with usage-based prices).

A document that breaks any rule raises `DocumentError` and nothing is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from worker.currencies import is_known_currency
from worker.domain import timeutil
from worker.formatting import (
    decimal_digits,
    format_decimal,
    format_time,
    parse_decimal,
    parse_time_value,
)

# --- limits (CONTRACT §3) ----------------------------------------------------------------------

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_PHASES = 1000
MAX_ITEM_VERSIONS = 10_000
MAX_TEXT_LENGTH = 1024
MAX_FREE_JSON_DEPTH = 16
MAX_FREE_JSON_BYTES = 16 * 1024
MAX_DECIMAL_DIGITS = 38

MAX_PROBLEMS_REPORTED = 50

PRICE_TYPES = ("flat", "unit", "tiered", "package", "dynamic")
USAGE_PRICE_TYPES = ("unit", "tiered", "package", "dynamic")

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_KEY_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_CURRENCY_PATTERN = re.compile(r"[A-Z]{3}\Z")
_INT32 = (-(2**31), 2**31 - 1)


# --- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: where (a printable path, empty for the whole document) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DocumentError(ValueError):
    """The document breaks one or more rules; `problems` lists each one."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems[:5]))

    def lines(self, limit: int = MAX_PROBLEMS_REPORTED) -> list[str]:
        """One line per problem (at most `limit`, then a line saying how many were left out)."""
        shown = [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            shown.append(f"... and {len(self.problems) - limit} more problems")
        return shown


def _error(message: str) -> PydanticCustomError:
    # Braces would be read as template fields by pydantic-core.
    return PydanticCustomError("document_rule", message.replace("{", "(").replace("}", ")"))


# --- field types -------------------------------------------------------------------------------


def is_valid_id(value: str) -> bool:
    """Whether `value` is a valid namespace / id (1–128 of `A-Z a-z 0-9 . _ : -`, letter or digit first)."""
    return bool(_ID_PATTERN.match(value))


def is_valid_key(value: str) -> bool:
    """Whether `value` is a valid phase / item key (1–64 of `A-Z a-z 0-9 . _ -`)."""
    return bool(_KEY_PATTERN.match(value))


def _check_id(value: str) -> str:
    if not _ID_PATTERN.match(value):
        raise _error("must be 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit")
    return value


def _check_key(value: str) -> str:
    if not _KEY_PATTERN.match(value):
        raise _error("must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return value


def _check_text(value: str) -> str:
    if len(value) > MAX_TEXT_LENGTH:
        raise _error(f"must be at most {MAX_TEXT_LENGTH} characters")
    return value


def _check_currency(value: str) -> str:
    if not _CURRENCY_PATTERN.match(value):
        raise _error("must be a three-letter ISO 4217 code in capitals, like USD")
    if not is_known_currency(value):
        raise _error(f"{value} is not an ISO 4217 currency code")
    return value


def _check_duration(value: str) -> str:
    if len(value) > MAX_TEXT_LENGTH:
        raise _error(f"must be at most {MAX_TEXT_LENGTH} characters")
    try:
        timeutil.Duration.parse(value)
    except ValueError as exc:
        raise _error(str(exc)) from None
    return value


def _parse_time_field(value: object) -> datetime:
    try:
        return parse_time_value(value)
    except ValueError as exc:
        raise _error(str(exc)) from None


def _parse_amount(value: object) -> Decimal:
    message = 'must be a non-negative decimal string, like "12.50"'
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise _error('must be a decimal written as a string (in quotes), like "12.50"')
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _error("must be a finite decimal")
        parsed = value
    elif isinstance(value, str):
        if len(value) > MAX_TEXT_LENGTH:
            raise _error(message)
        try:
            parsed = parse_decimal(value)
        except ValueError:
            raise _error(message) from None
    else:
        raise _error(message)
    if parsed < 0:
        raise _error(message)
    if decimal_digits(parsed) > MAX_DECIMAL_DIGITS:
        raise _error(f"must have at most {MAX_DECIMAL_DIGITS} digits")
    return parsed


def _json_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_json_depth(v) for v in value), default=0)
    return 0


def _check_free_json(value: Any) -> Any:
    # Depth first: it also keeps json.dumps away from pathologically deep input.
    if _json_depth(value) > MAX_FREE_JSON_DEPTH:
        raise _error(f"must be nested at most {MAX_FREE_JSON_DEPTH} levels deep")
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise _error("must be plain JSON") from None
    if len(encoded.encode()) > MAX_FREE_JSON_BYTES:
        raise _error(f"must be at most {MAX_FREE_JSON_BYTES // 1024} KiB as JSON")
    return value


def _check_sort_hint(value: int) -> int:
    if not _INT32[0] <= value <= _INT32[1]:
        raise _error("must be a 32-bit integer")
    return value


Id = Annotated[str, AfterValidator(_check_id)]
Key = Annotated[str, AfterValidator(_check_key)]
Text = Annotated[str, AfterValidator(_check_text)]
Currency = Annotated[str, AfterValidator(_check_currency)]
Duration = Annotated[str, AfterValidator(_check_duration)]
Time = Annotated[datetime, BeforeValidator(_parse_time_field)]
Amount = Annotated[Decimal, BeforeValidator(_parse_amount)]
FreeJson = Annotated[Any, AfterValidator(_check_free_json)]
Annotations = Annotated[dict[str, Any], AfterValidator(_check_free_json)]
SortHint = Annotated[StrictInt, AfterValidator(_check_sort_hint)]


def _reject_on_flat(value: Any) -> Any:
    if value is not None:
        raise _error("is allowed only on usage-based prices (unit, tiered, package, dynamic), not on flat")
    return value


NotOnFlat = Annotated[Any, AfterValidator(_reject_on_flat)]


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


class Phase(_Model):
    key: Key
    id: Id | None = None
    name: Text | None = None  # defaults to the key
    active_from: Time
    sort_hint: SortHint | None = None
    items: dict[Key, list[ItemVersion]] = Field(default_factory=dict)


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

    def item_version_count(self) -> int:
        return sum(len(versions) for phase in self.phases for versions in phase.items.values())


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
        document = SubscriptionDocument.model_validate(value)
    except ValidationError as exc:
        raise DocumentError(validation_problems(exc)) from None
    problems = document_problems(document)
    if problems:
        raise DocumentError(problems)
    _apply_defaults(document)
    return document


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


# --- error formatting --------------------------------------------------------------------------


def format_path(loc: Iterable[int | str]) -> str:
    """`('phases', 0, 'items', 'fee', 1, 'rate_card')` → `phases[0].items.fee[1].rate_card`.

    Discriminator tags that pydantic inserts after `price` are dropped.
    """
    text = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            text += " (key)"
        elif previous == "price" and part in PRICE_TYPES:
            continue
        else:
            text += f".{part}" if text else part
        previous = part
    return text


def validation_problems(exc: ValidationError) -> list[Problem]:
    """One Problem per pydantic error, with the field path and a plain-language message."""
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(str(ctx.get("discriminator", "type")).strip("'"))
        problems.append(Problem(format_path(loc), _message(kind, error["msg"], ctx, error.get("input"))))
    return problems


def format_validation_error(exc: ValidationError) -> list[str]:
    """`path: message` lines, one per problem."""
    return [str(problem) for problem in validation_problems(exc)]


def _message(kind: str, msg: str, ctx: Mapping[str, Any], value: Any) -> str:
    simple = {
        "missing": "is required",
        "extra_forbidden": "is not a known field",
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "int_type": "must be an integer",
        "dict_type": "must be an object",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "list_type": "must be a list",
        "union_tag_not_found": "is required",
        "decimal_type": 'must be a decimal string, like "12.50"',
        "datetime_type": "must be an RFC 3339 time string",
    }
    if kind in simple:
        return simple[kind]
    if kind == "literal_error":
        return f"must be one of: {_plain_choices(str(ctx.get('expected', '')))}"
    if kind == "union_tag_invalid":
        return (
            f"must be one of: {', '.join(PRICE_TYPES)} (got {value.get('type')!r})"
            if isinstance(value, Mapping)
            else "is not a known price type"
        )
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    if kind == "document_rule":
        return msg
    return msg[:1].lower() + msg[1:]


def _plain_choices(expected: str) -> str:
    return expected.replace("'", "").replace(" or ", ", ")


# --- document rules ----------------------------------------------------------------------------


def document_problems(document: SubscriptionDocument) -> list[Problem]:
    """Rules relating fields to each other (run after the field rules passed)."""
    problems: list[Problem] = []
    add = problems.append
    if document.active_to is not None and document.active_to < document.active_from:
        add(Problem("active_to", "must not be before active_from"))

    versions_total = document.item_version_count()
    if versions_total > MAX_ITEM_VERSIONS:
        add(Problem("phases", f"has {versions_total} item versions; at most {MAX_ITEM_VERSIONS} are allowed"))

    phase_keys: dict[str, int] = {}
    phase_ids: dict[str, int] = {}
    item_ids: dict[str, str] = {}
    for p_index, phase in enumerate(document.phases):
        phase_path = f"phases[{p_index}]"
        if phase.key in phase_keys:
            add(Problem(f"{phase_path}.key", f"{phase.key!r} is already used by phases[{phase_keys[phase.key]}]"))
        else:
            phase_keys[phase.key] = p_index
        if phase.id is not None:
            if phase.id in phase_ids:
                add(Problem(f"{phase_path}.id", f"{phase.id!r} is already used by phases[{phase_ids[phase.id]}]"))
            else:
                phase_ids[phase.id] = p_index
        for key, versions in phase.items.items():
            key_path = f"{phase_path}.items.{key}"
            if not versions:
                add(Problem(key_path, "must list at least one item version"))
            for v_index, version in enumerate(versions):
                version_path = f"{key_path}[{v_index}]"
                _version_problems(version, version_path, add)
                if version.id is not None:
                    if version.id in item_ids:
                        add(Problem(f"{version_path}.id", f"{version.id!r} is already used by {item_ids[version.id]}"))
                    else:
                        item_ids[version.id] = version_path
                if v_index > 0:
                    _ordering_problem(versions[v_index - 1], version, phase, v_index, version_path, add)
    return problems


def _version_problems(version: ItemVersion, path: str, add: Any) -> None:
    if version.active_to is not None and version.active_from is not None and version.active_to < version.active_from:
        add(Problem(f"{path}.active_to", "must not be before active_from"))
    rate_card = version.rate_card
    if rate_card.discounts is not None and rate_card.discounts.usage is not None:
        price_type = rate_card.price.type if rate_card.price is not None else None
        if price_type not in USAGE_PRICE_TYPES:
            add(
                Problem(
                    f"{path}.rate_card.discounts.usage",
                    "is allowed only with a usage-based price (unit, tiered, package, dynamic)",
                )
            )


def _ordering_problem(
    previous: ItemVersion, current: ItemVersion, phase: Phase, index: int, path: str, add: Any
) -> None:
    previous_from = previous.active_from or phase.active_from
    current_from = current.active_from or phase.active_from
    if current_from < previous_from:
        add(
            Problem(f"{path}.active_from", f"versions must be sorted oldest first: starts before version [{index - 1}]")
        )
    elif previous.active_to is None or previous.active_to > current_from:
        ends = "never ends" if previous.active_to is None else f"ends {format_time(previous.active_to)}"
        add(Problem(f"{path}.active_from", f"overlaps version [{index - 1}], which {ends}"))


def _apply_defaults(document: SubscriptionDocument) -> None:
    if document.billing_anchor is None:
        document.billing_anchor = document.active_from
    for phase in document.phases:
        if phase.name is None:
            phase.name = phase.key
        for key, versions in phase.items.items():
            for version in versions:
                if version.active_from is None:
                    version.active_from = phase.active_from
                if version.annotations is None:
                    version.annotations = {}
                if version.rate_card.name is None:
                    version.rate_card.name = key
                if version.rate_card.discounts is None:
                    version.rate_card.discounts = Discounts()


# --- printed shape -----------------------------------------------------------------------------


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def price_to_json(price: FlatPrice | UnitPrice | TieredPrice | PackagePrice | DynamicPrice | None) -> Any:
    """The contract's price object, decimals as shortest strings; None for no price."""
    if price is None:
        return None
    if isinstance(price, FlatPrice):
        return {"type": "flat", "amount": _dec(price.amount), "payment_term": price.payment_term}
    body: dict[str, Any]
    if isinstance(price, UnitPrice):
        body = {"type": "unit", "amount": _dec(price.amount)}
    elif isinstance(price, TieredPrice):
        body = {
            "type": "tiered",
            "mode": price.mode,
            "tiers": [
                {
                    "up_to_amount": _dec(tier.up_to_amount),
                    "flat_price": _dec(tier.flat_price),
                    "unit_price": _dec(tier.unit_price),
                }
                for tier in price.tiers
            ],
        }
    elif isinstance(price, PackagePrice):
        body = {
            "type": "package",
            "amount": _dec(price.amount),
            "quantity_per_package": _dec(price.quantity_per_package),
        }
    else:
        body = {"type": "dynamic", "multiplier": _dec(price.multiplier)}
    if price.minimum_amount is not None:
        body["minimum_amount"] = _dec(price.minimum_amount)
    if price.maximum_amount is not None:
        body["maximum_amount"] = _dec(price.maximum_amount)
    return body


def discounts_to_json(discounts: Discounts | None) -> dict[str, Any]:
    discounts = discounts or Discounts()
    return {
        "percentage": None if discounts.percentage is None else {"percentage": _dec(discounts.percentage.percentage)},
        "usage": None if discounts.usage is None else {"quantity": _dec(discounts.usage.quantity)},
    }


def rate_card_to_json(rate_card: RateCard) -> dict[str, Any]:
    """The rate card object as stored in `subscription_items.rate_card` and printed by `get`."""
    return {
        "name": rate_card.name,
        "description": rate_card.description,
        "feature_key": rate_card.feature_key,
        "billing_cadence": rate_card.billing_cadence,
        "price": price_to_json(rate_card.price),
        "discounts": discounts_to_json(rate_card.discounts),
        "tax_config": rate_card.tax_config,
    }


def to_document(document: SubscriptionDocument) -> dict[str, Any]:
    """The document in exactly the contract's shape (key order included)."""
    return {
        "namespace": document.namespace,
        "id": document.id,
        "customer_id": document.customer_id,
        "name": document.name if document.name is not None else document.id,
        "currency": document.currency,
        "billing_cadence": document.billing_cadence,
        "billing_anchor": _time(document.billing_anchor or document.active_from),
        "pro_rating": {"enabled": document.pro_rating.enabled, "mode": document.pro_rating.mode},
        "active_from": _time(document.active_from),
        "active_to": _time(document.active_to),
        "phases": [
            {
                "key": phase.key,
                "id": phase.id,
                "name": phase.name if phase.name is not None else phase.key,
                "active_from": _time(phase.active_from),
                "sort_hint": phase.sort_hint,
                "items": {
                    key: [
                        {
                            "id": version.id,
                            "active_from": _time(version.active_from or phase.active_from),
                            "active_to": _time(version.active_to),
                            "annotations": version.annotations if version.annotations is not None else {},
                            "rate_card": rate_card_to_json(version.rate_card),
                        }
                        for version in versions
                    ]
                    for key, versions in phase.items.items()
                },
            }
            for phase in document.phases
        ],
    }
