"""Field types of the contract (docs/contract.md §3, §4), shared by the subscription document and the events.

Each type checks one field and, when the value breaks the rule, raises a `contract_rule` error whose
message `worker.contract.problems` prints after the field's path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, StrictInt, ValidationInfo
from pydantic_core import PydanticCustomError

from worker.contract.text import decimal_digits, format_time, parse_decimal, parse_time_value
from worker.domain import timeutil
from worker.domain.currencies import is_known_currency

#: The error type of every rule below (`worker.contract.problems` prints its message as it is).
RULE = "contract_rule"

MAX_TEXT_LENGTH = 1024
MAX_FREE_JSON_DEPTH = 16
MAX_FREE_JSON_BYTES = 16 * 1024
MAX_DECIMAL_DIGITS = 38

MAX_EVENT_ID_LENGTH = 256

PRICE_TYPES = ("flat", "unit", "tiered", "package", "dynamic")
USAGE_PRICE_TYPES = ("unit", "tiered", "package", "dynamic")

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_KEY_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_CURRENCY_PATTERN = re.compile(r"[A-Z]{3}\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT32 = (-(2**31), 2**31 - 1)


def _error(message: str) -> PydanticCustomError:
    # Braces would be read as template fields by pydantic-core.
    return PydanticCustomError(RULE, message.replace("{", "(").replace("}", ")"))


def is_valid_id(value: str) -> bool:
    """Whether `value` is a valid namespace / id (1–128 of `A-Z a-z 0-9 . _ : -`, letter or digit first)."""
    return bool(_ID_PATTERN.match(value))


def _check_id(value: str) -> str:
    if not _ID_PATTERN.match(value):
        raise _error("must be 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit")
    return value


def _check_key(value: str) -> str:
    if not _KEY_PATTERN.match(value):
        raise _error("must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return value


def text_problem(value: str) -> str | None:
    """docs/contract.md §3 limits, "text": no NUL character and no lone surrogate in any string of a document or
    an event (Postgres and UTF-8 cannot hold them); the reason, or None."""
    if "\x00" in value:
        return "must not contain the NUL character (\\u0000)"
    if _SURROGATE.search(value):
        return "must not contain a lone surrogate (\\ud800-\\udfff): it is not valid Unicode text"
    return None


def printable(value: str) -> str:
    """`value` as it may be printed in a problem's path: escaped (`'a\\x00b'`) when it holds control
    characters or lone surrogates, which a terminal or a UTF-8 stream cannot take as they are."""
    return value if value.isprintable() else ascii(value)


def _check_text(value: str) -> str:
    if len(value) > MAX_TEXT_LENGTH:
        raise _error(f"must be at most {MAX_TEXT_LENGTH} characters")
    if (problem := text_problem(value)) is not None:
        raise _error(problem)
    return value


def _check_currency(value: str) -> str:
    if not _CURRENCY_PATTERN.match(value):
        raise _error("must be a three-letter ISO 4217 code in capitals, like USD")
    if not is_known_currency(value):
        raise _error(f"{value} is not an ISO 4217 currency code")
    return value


def _check_duration(value: str, info: ValidationInfo) -> str:
    if len(value) > MAX_TEXT_LENGTH:
        raise _error(f"must be at most {MAX_TEXT_LENGTH} characters")
    # Read back from the tables (`STORED` context): written before the ASCII-digits rule, still printed.
    stored = isinstance(info.context, Mapping) and bool(info.context.get("stored"))
    try:
        timeutil.Duration.parse(timeutil.ascii_digits(value) if stored else value)
    except ValueError as exc:
        raise _error(str(exc)) from None
    return value


def _parse_time(value: object) -> datetime:
    try:
        return parse_time_value(value)
    except ValueError as exc:
        raise _error(str(exc)) from None


def _check_identifier(value: object) -> str:
    if not isinstance(value, str):
        raise _error("must be a string")
    return _check_id(value)


def _check_event_id(value: object) -> str:
    if not isinstance(value, str):
        raise _error("must be a string")
    if not 1 <= len(value) <= MAX_EVENT_ID_LENGTH:
        raise _error(f"must be 1-{MAX_EVENT_ID_LENGTH} characters")
    if not value.isprintable():
        raise _error("must not contain control characters")
    return value


_DECIMAL_SYNTAX = 'must be a non-negative decimal string, like "12.50"'


def parse_plain_decimal(text: str) -> Decimal:
    """The one rule for a decimal written as text on every interface — documents, events and CLI options such as
    `credits grant --amount` and `charges set-quantity --quantity` (docs/contract.md §3 limits, "decimals" and
    "digits"): plain notation `-?digits[.digits]` (no exponent, no `_` separators, no surrounding spaces), ASCII
    digits only, at most 38 digits. The sign is the caller's rule. Raises ValueError with the reason."""
    if len(text) > MAX_TEXT_LENGTH:
        raise ValueError(_DECIMAL_SYNTAX)
    timeutil.check_ascii_digits(text)
    try:
        parsed = parse_decimal(text)
    except ValueError:
        raise ValueError(_DECIMAL_SYNTAX) from None
    if decimal_digits(parsed) > MAX_DECIMAL_DIGITS:
        raise ValueError(f"must have at most {MAX_DECIMAL_DIGITS} digits")
    return parsed


def _parse_amount(value: object) -> Decimal:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise _error('must be a decimal written as a string (in quotes), like "12.50"')
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _error("must be a finite decimal")
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = parse_plain_decimal(value)
        except ValueError as exc:
            raise _error(str(exc)) from None
    else:
        raise _error(_DECIMAL_SYNTAX)
    if parsed < 0:
        raise _error(_DECIMAL_SYNTAX)
    if decimal_digits(parsed) > MAX_DECIMAL_DIGITS:
        raise _error(f"must have at most {MAX_DECIMAL_DIGITS} digits")
    return parsed


def _json_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_json_depth(v) for v in value), default=0)
    return 0


def _json_text_problems(value: Any, path: str = "") -> list[tuple[str, str]]:
    """`(relative path, reason)` for every string, key or value, that breaks `text_problem`."""
    out: list[tuple[str, str]] = []
    if isinstance(value, str):
        if (problem := text_problem(value)) is not None:
            out.append((path, problem))
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{printable(str(key))}" if path else printable(str(key))
            if isinstance(key, str) and (problem := text_problem(key)) is not None:
                out.append((f"{inner} (key)", problem))
            out += _json_text_problems(item, inner)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _json_text_problems(item, f"{path}[{index}]")
    return out


def _check_free_json(value: Any) -> Any:
    # Depth first: it also keeps json.dumps away from pathologically deep input.
    if _json_depth(value) > MAX_FREE_JSON_DEPTH:
        raise _error(f"must be nested at most {MAX_FREE_JSON_DEPTH} levels deep")
    if problems := _json_text_problems(value):
        # Reported at each string's own path below the field (`annotations.team.owner`), like `refuse`.
        raise PydanticCustomError(RULE, "the fields break rules", {"problems": problems})
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
#: An RFC 3339 time (an aware datetime also passes), as UTC; printed back in RFC 3339.
Time = Annotated[datetime, BeforeValidator(_parse_time), PlainSerializer(format_time, return_type=str)]
Amount = Annotated[Decimal, BeforeValidator(_parse_amount)]
FreeJson = Annotated[Any, AfterValidator(_check_free_json)]
Annotations = Annotated[dict[str, Any], AfterValidator(_check_free_json)]
SortHint = Annotated[StrictInt, AfterValidator(_check_sort_hint)]
#: An id in a model that is not strict (events): anything but a string is refused here.
Identifier = Annotated[str, BeforeValidator(_check_identifier)]
EventId = Annotated[str, BeforeValidator(_check_event_id)]


def _reject_on_flat(value: Any) -> Any:
    if value is not None:
        raise _error("is allowed only on usage-based prices (unit, tiered, package, dynamic), not on flat")
    return value


NotOnFlat = Annotated[Any, AfterValidator(_reject_on_flat)]
