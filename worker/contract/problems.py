"""Problems with the contract's inputs, as `path: message` lines whose path names the field the way a
person reads the JSON (`phases[0].items.platform-fee[1].rate_card.price.amount`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from worker.contract.fields import PRICE_TYPES, RULE, printable
from worker.errors import InvalidInputError

MAX_PROBLEMS_REPORTED = 50


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: where (a printable path, empty for the whole document) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DocumentError(InvalidInputError):
    """The document breaks one or more rules; `problems` lists each one."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems[:5]))

    def report(self) -> list[str]:
        return self.lines()

    def lines(self, limit: int = MAX_PROBLEMS_REPORTED) -> list[str]:
        """One line per problem (at most `limit`, then a line saying how many were left out)."""
        shown = [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            shown.append(f"... and {len(self.problems) - limit} more problems")
        return shown


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
            shown = printable(part)  # a key with a NUL or a lone surrogate is printed escaped
            text += f".{shown}" if text else shown
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
        nested = ctx.get("problems") if kind == RULE else None
        if nested:  # a model's rules relating its fields: paths relative to the model (`refuse`)
            base = format_path(loc)
            problems.extend(Problem(_join(base, path), message) for path, message in nested)
            continue
        problems.append(Problem(format_path(loc), _message(kind, error["msg"], ctx, error.get("input"))))
    return problems


def refuse(problems: list[Problem]) -> None:
    """From a model validator: raise the problems found relating the model's fields (paths relative to
    the model), if any. Pydantic reports them with the other models' problems, in the same round."""
    if problems:
        raise PydanticCustomError(RULE, "the fields break rules", {"problems": [(p.path, p.message) for p in problems]})


def _join(base: str, path: str) -> str:
    if not base or not path:
        return base or path
    return f"{base}{path}" if path.startswith("[") else f"{base}.{path}"


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
    if kind == RULE:
        return msg
    return msg[:1].lower() + msg[1:]


def _plain_choices(expected: str) -> str:
    return expected.replace("'", "").replace(" or ", ", ")
