"""Price shapes of docs/contract.md §3: a flat fee, or a usage-based price copied to lines unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from worker.domain.money import format_decimal, parse_decimal

PaymentTerm = Literal["in_advance", "in_arrears"]
USAGE_TYPES = frozenset({"unit", "tiered", "package", "dynamic"})


@dataclass(frozen=True, slots=True)
class FlatPrice:
    amount: Decimal
    payment_term: PaymentTerm = "in_advance"

    is_flat = True

    @property
    def in_advance(self) -> bool:
        return self.payment_term == "in_advance"

    def with_amount(self, amount: Decimal) -> FlatPrice:
        return FlatPrice(amount, self.payment_term)

    def to_json(self) -> dict[str, Any]:
        return {"type": "flat", "amount": format_decimal(self.amount), "payment_term": self.payment_term}


@dataclass(frozen=True, slots=True)
class UsagePrice:
    """A usage-based price (`unit`, `tiered`, `package`, `dynamic`); its JSON is kept as given."""

    type: str
    spec: Mapping[str, Any]

    is_flat = False
    in_advance = False

    @property
    def progressively_billable(self) -> bool:
        """docs/sync.md §9: every usage price except volume-tiered may be billed progressively."""
        return not (self.type == "tiered" and self.spec.get("mode") == "volume")

    def to_json(self) -> dict[str, Any]:
        return dict(self.spec)


Price = FlatPrice | UsagePrice


def price_from_json(data: Mapping[str, Any] | None) -> Price | None:
    """Build a price from its stored JSON (already validated when the document was applied)."""
    if data is None:
        return None
    kind = data.get("type")
    if kind == "flat":
        term = data.get("payment_term") or "in_advance"
        if term == "in_advance":
            return FlatPrice(parse_decimal(data["amount"]), "in_advance")
        if term == "in_arrears":
            return FlatPrice(parse_decimal(data["amount"]), "in_arrears")
        raise ValueError(f"price.payment_term: unknown value {term!r}")
    if kind in USAGE_TYPES:
        return UsagePrice(str(kind), dict(data))
    raise ValueError(f"price.type: unknown price type {kind!r}")
