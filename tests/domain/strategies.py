"""Hypothesis strategies for random but valid subscriptions."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import strategies as st

from tests.domain.builders import t
from worker.domain.errors import InvalidViewError
from worker.domain.prices import FlatPrice, UsagePrice
from worker.domain.timeutil import BeyondRangeError, Duration
from worker.domain.view import ItemRecord, PhaseRecord, RateCard, SubscriptionRecord, SubscriptionView, build_view

BASE = t("2024-01-01")
CADENCES = ["P1M", "P1W", "P2W", "P3M", "P1Y", "P1D"]

offsets = st.integers(min_value=0, max_value=400 * 86400).map(lambda s: timedelta(seconds=s))
prices = st.one_of(
    st.none(),
    st.builds(FlatPrice, st.decimals("0.01", "1000", places=2), st.sampled_from(["in_advance", "in_arrears"])),
    st.just(UsagePrice("unit", {"type": "unit", "amount": "1"})),
)


@st.composite
def subscriptions(draw: st.DrawFn, same_cadence: bool = False, early_phase: bool = False) -> SubscriptionView:
    """`early_phase`: the first phase may start before the subscription (docs/contract.md §3 allows it); its
    versions still start with the subscription."""
    cadence = draw(st.sampled_from(CADENCES[:4]))
    start = BASE + draw(offsets)
    anchor = BASE + draw(offsets) - timedelta(days=200)
    n_phases = draw(st.integers(1, 3))
    phase_starts = sorted({start} | {start + draw(offsets) for _ in range(n_phases - 1)})
    end = start + draw(offsets) + timedelta(days=1) if draw(st.booleans()) else None
    lead = draw(offsets) + timedelta(seconds=1) if early_phase and draw(st.booleans()) else timedelta(0)
    phases = []
    item_id = 0
    for pi, pstart in enumerate(phase_starts):
        items = []
        # versions start inside their phase (the subscription service never stores them elsewhere)
        span = (phase_starts[pi + 1] - pstart).total_seconds() if pi + 1 < len(phase_starts) else 400 * 86400
        inside = st.integers(min_value=1, max_value=max(1, int(span) - 1)).map(lambda s: timedelta(seconds=s))
        for key in draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)):
            n_versions = draw(st.integers(1, 3)) if span > 2 else 1
            bounds = sorted({pstart + draw(inside) for _ in range(n_versions - 1)})
            starts = [pstart, *bounds]
            for vi, vstart in enumerate(starts):
                vend = starts[vi + 1] if vi + 1 < len(starts) else None
                icad = cadence if same_cadence else draw(st.sampled_from([*CADENCES, None]))
                price = draw(prices)
                if icad is None and price is not None and not price.is_flat:
                    price = None  # a one-time item takes a flat price or none (docs/contract.md §3 structure)
                card = RateCard(key, None, "feat", Duration.parse(icad) if icad else None, price, None, None)
                item_id += 1
                items.append(ItemRecord(f"it_{item_id:03d}", key, vstart, vend, card, {}))
        phase_start = pstart - lead if pi == 0 else pstart
        phases.append(PhaseRecord(f"ph_{pi}", f"p{pi}", f"p{pi}", phase_start, None, tuple(items)))
    record = SubscriptionRecord(
        "acme",
        "sub_01",
        "cust_01",
        "USD",
        Duration.parse(cadence),
        anchor,
        draw(st.booleans()),
        "prorate_prices",
        start,
        end,
    )
    return build_view(record, phases)


as_of_offsets = st.integers(min_value=-30 * 86400, max_value=900 * 86400).map(lambda s: timedelta(seconds=s))


def bounds(view: SubscriptionView) -> list[datetime]:
    """The instants target generation branches around: the subscription's, its phases' and its versions' bounds."""
    out = [view.active_from, *([view.active_to] if view.active_to else [])]
    for phase in view.phases:
        out += [phase.start, *([phase.end] if phase.end else [])]
        for versions in phase.items.values():
            out += [v.start for v in versions] + [v.end for v in versions if v.end is not None]
    return out


@st.composite
def instants_near(draw: st.DrawFn, view: SubscriptionView) -> datetime:
    """An `as_of` for `view`: random, or at or next to (a microsecond, a second, an hour) one of its `bounds` or the
    start or end of the billing period around either (docs/sync.md §2.4, §3.2: where the horizon moves)."""
    base = draw(st.one_of(as_of_offsets.map(lambda o: BASE + o), st.sampled_from(bounds(view))))
    where = draw(st.sampled_from(["as drawn", "period start", "period end"]))
    if where != "as drawn" and base >= view.active_from:
        try:
            period = view.aligned_billing_period(base)
        except (BeyondRangeError, InvalidViewError):
            pass
        else:
            base = period.start if where == "period start" else period.end
    return base + timedelta(microseconds=draw(st.sampled_from([0, 0, 1, -1, 10**6, -(10**6), 3600 * 10**6])))


def full_amount(price: FlatPrice) -> Decimal:
    return price.amount
