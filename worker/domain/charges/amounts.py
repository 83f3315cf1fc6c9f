"""Amounts of docs/credits.md §3.5: a flat charge's prorated `A`, usage rating, and the percentage discount `D`."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from worker.domain.errors import DomainError
from worker.domain.money import exact, parse_decimal, prorate, proration_ratio, round_cur
from worker.domain.timeutil import Period

ZERO = Decimal(0)


# --- amounts (docs/credits.md §3.5) -----------------------------------------------------------------------


# Not `@exact`: every operation below names its context (`prorate`, `round_cur`, `proration_ratio`; the seconds are
# integers), as for lines (worker.domain.target), so no `exact_context` is entered per charge (~1 µs each, 25 a
# credit first sync: docs/performance.md "COMMIT in the write's round trip, and small cuts per row").
# `tests/domain/test_money.py` runs it under a 3-digit thread context.
def flat_charge_amount(
    amount_before_proration: Decimal,
    service: Period,
    full: Period,
    pro_rating_enabled: bool,
    pro_rating_mode: str,
    currency: str,
) -> Decimal:
    """`A` of a flat charge: prorated by the 16-place ratio when `0 < s < f` (truncated periods), else the
    rounded amount. Unlike lines (docs/sync.md §3.9 rule 3), a period cut by the subscription end is prorated."""
    s, f = service.truncated().seconds(), full.truncated().seconds()
    if pro_rating_enabled and pro_rating_mode == "prorate_prices" and 0 < s < f:
        return prorate(amount_before_proration, proration_ratio(s, f), currency)
    return round_cur(amount_before_proration, currency)


def _dec(value: Any) -> Decimal:
    return ZERO if value is None else parse_decimal(value)


def _mul(a: Decimal, b: Decimal, currency: str) -> Decimal:
    return round_cur(a * b, currency)  # exact: the callers run in money.exact_context


def _tiers(price: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Tiers by `up_to_amount` ascending, the null one last."""
    tiers: list[Mapping[str, Any]] = list(price.get("tiers") or [])
    return sorted(tiers, key=lambda t: (t.get("up_to_amount") is None, _dec(t.get("up_to_amount"))))


@exact
def rate_usage(
    price: Mapping[str, Any], quantity: Decimal, discounts: Mapping[str, Any] | None, currency: str
) -> Decimal:
    """`A` of a usage charge: the rate card price rated on `quantity` less the usage discount, each component
    rounded, then clamped to the rounded minimum and maximum (docs/credits.md §3.5, project)."""
    usage = (discounts or {}).get("usage") or {}
    q = max(ZERO, quantity - _dec(usage.get("quantity")))
    kind = price.get("type")
    if kind == "unit":
        base = _mul(q, _dec(price.get("amount")), currency)
    elif kind == "package":
        per_package = _dec(price.get("quantity_per_package"))
        if per_package <= 0:
            raise DomainError("price.quantity_per_package: must be positive to rate a package price")
        whole, rest = divmod(q, per_package)  # ceil(q / per_package), without a rounded quotient
        packages = whole + 1 if rest > 0 else whole
        base = _mul(packages, _dec(price.get("amount")), currency)
    elif kind == "dynamic":
        base = _mul(q, _dec(price.get("multiplier")), currency)
    elif kind == "tiered" and price.get("mode") == "volume":
        base = ZERO
        for tier in _tiers(price):
            up_to = tier.get("up_to_amount")
            if up_to is None or q <= _dec(up_to):
                base = round_cur(_dec(tier.get("flat_price")), currency) + _mul(
                    q, _dec(tier.get("unit_price")), currency
                )
                break
    elif kind == "tiered":
        base = ZERO
        lower = ZERO
        for i, tier in enumerate(_tiers(price)):
            if i > 0 and q <= lower:
                break
            up_to = tier.get("up_to_amount")
            top = q if up_to is None else min(q, _dec(up_to))
            flat = round_cur(_dec(tier.get("flat_price")), currency)
            base += flat + _mul(max(ZERO, top - lower), _dec(tier.get("unit_price")), currency)
            if up_to is None:
                break
            lower = _dec(up_to)
    else:
        raise DomainError(f"price.type: cannot rate a {kind!r} price")
    if price.get("minimum_amount") is not None:
        base = max(base, round_cur(_dec(price["minimum_amount"]), currency))
    if price.get("maximum_amount") is not None:
        base = min(base, round_cur(_dec(price["maximum_amount"]), currency))
    return base


@exact
def discount_total(amount: Decimal, discounts: Mapping[str, Any] | None, currency: str) -> Decimal:
    """`D = min(A, round_cur(A × p / 100))` with `p` the percentage discount, else 0 (docs/credits.md §3.5)."""
    percentage = (discounts or {}).get("percentage") or {}
    p = percentage.get("percentage")
    if p is None:
        return ZERO
    return min(amount, round_cur((amount * _dec(p)).scaleb(-2), currency))
