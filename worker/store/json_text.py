"""JSON columns read as text (docs/performance.md "Credit sync cuts"): psycopg decodes a `jsonb` cell with a
Python-level `json.loads` call (~4 µs a cell, most of a charge row's decoding); read as `::text` the cell costs
nothing until it is needed, and a price — the same few over a subscription's thousands of lines or charges — is
decoded and parsed once per read."""

from __future__ import annotations

import json
from typing import Any

from worker.domain.prices import Price, price_from_json


def price_from_text(text: str | None, prices: dict[str, Price | None]) -> Price | None:
    """The price stored as `text` (a `jsonb` column read as text), parsed once per distinct text of one read:
    `prices` is that read's memo. Prices are immutable, so lines and charges may share one."""
    if text is None:
        return None
    price = prices.get(text)
    if price is None:
        price = prices[text] = price_from_json(json.loads(text))
    return price


def json_from_text(text: str | None) -> Any:
    """A `jsonb` column read as text, decoded (a new object each time: callers own mutable values); SQL NULL and
    JSON `null` are None."""
    return None if text is None or text == "null" else json.loads(text)


def object_from_text(text: str | None) -> dict[str, Any]:
    """A JSON object column (annotations) read as text; SQL NULL and `{}` — nearly every row — give a new empty dict
    without decoding."""
    if text is None or text == "{}":
        return {}
    value: dict[str, Any] = json.loads(text)
    return value
