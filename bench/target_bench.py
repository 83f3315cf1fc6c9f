"""Micro-benchmark of the pure target builder (issue 3): a monthly subscription with I items over Y years.

    python -m bench.target_bench            # prints a table and the fitted growth exponents

Each figure is the median of several runs of `build_target` (no database involved).
"""

from __future__ import annotations

import math
import statistics
import time
from datetime import UTC, datetime
from decimal import Decimal

from worker.domain.persisted import build_persisted_state
from worker.domain.prices import FlatPrice, UsagePrice
from worker.domain.target import build_target
from worker.domain.timeutil import Duration
from worker.domain.view import ItemRecord, PhaseRecord, RateCard, SubscriptionRecord, build_view

START = datetime(2015, 1, 1, tzinfo=UTC)
EMPTY = build_persisted_state([], [], [])


def make_view(items: int):  # type: ignore[no-untyped-def]
    monthly = Duration.parse("P1M")
    records = []
    for n in range(items):
        price = (
            FlatPrice(Decimal(10 + n), "in_advance" if n % 3 else "in_arrears")
            if n % 2 == 0
            else UsagePrice("unit", {"type": "unit", "amount": "0.5"})
        )
        card = RateCard(f"item {n}", None, f"feature_{n}", monthly, price, None, None)
        records.append(ItemRecord(f"it_{n}", f"item-{n}", START, None, card, {}))
    record = SubscriptionRecord("bench", "sub", "cust", "USD", monthly, START, True, "prorate_prices", START, None)
    return build_view(record, [PhaseRecord("ph", "default", "default", START, None, tuple(records))])


def measure(years: int, items: int, repeat: int = 5) -> tuple[float, int]:
    view = make_view(items)
    as_of = datetime(START.year + years, 1, 1, 12, tzinfo=UTC)
    times, n = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        n = len(build_target(view, as_of, EMPTY).lines)
        times.append(time.perf_counter() - began)
    return statistics.median(times), n


def exponent(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of log(time) against log(size)."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    seconds, lines = measure(10, 20)
    print(
        f"10-year monthly subscription, 20 items: {lines} lines in {seconds * 1000:.1f} ms "
        f"({seconds / lines * 1e6:.1f} µs per line)"
    )
    print("\nby years (20 items):")
    by_years = []
    for years in (1, 2, 5, 10, 20):
        s, n = measure(years, 20)
        by_years.append((n, s))
        print(f"  {years:>3} years  {n:>6} lines  {s * 1000:8.1f} ms")
    print(f"  fitted exponent: {exponent(by_years):.2f} (1.00 = linear)")
    print("\nby items (10 years):")
    by_items = []
    for items in (5, 10, 20, 40, 80):
        s, n = measure(10, items)
        by_items.append((n, s))
        print(f"  {items:>3} items  {n:>6} lines  {s * 1000:8.1f} ms")
    print(f"  fitted exponent: {exponent(by_items):.2f} (1.00 = linear)")


if __name__ == "__main__":
    main()
