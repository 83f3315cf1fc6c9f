"""How one generated period was derived (docs/sync.md §10.1): the phase, the item version, the
period rule with its clamps, `invoice_at`, the horizon and the proration, as a JSON-ready dict.

Pure: it reads a candidate of the target builder (`worker.domain.target.generate_candidates`), never a stored
row, so what it states is what a sync computes. Times are RFC 3339 UTC, amounts shortest exact strings.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from worker.domain.charges.amounts import flat_charge_amount
from worker.domain.horizon import horizon
from worker.domain.money import format_decimal, proration_ratio, round_cur
from worker.domain.prices import FlatPrice, Price
from worker.domain.target import Candidate, flat_amount, is_billable, prorates
from worker.domain.timeutil import BeyondRangeError, Duration, Period, format_instant, period_bounds_at, step, trunc
from worker.domain.view import SubscriptionView

_TICK = timedelta(microseconds=1)


def instant(t: datetime | None) -> str | None:
    return None if t is None else format_instant(t)


def period_json(p: Period | None) -> dict[str, str | None] | None:
    return None if p is None else {"from": format_instant(p.start), "to": format_instant(p.end)}


def price_json(price: Price | None) -> dict[str, Any] | None:
    return None if price is None else price.to_json()


def boundary_index(anchor: datetime, d: Duration, start: datetime) -> int:
    """The k with `step(anchor, d, k) == start` (a boundary of the recurrence, docs/sync.md §1.3)."""
    k = int((start - anchor).total_seconds() // d.approx_seconds())
    while step(anchor, d, k) > start:
        k -= 1
    while step(anchor, d, k) < start:
        k += 1
    return k


def _raw_period(anchor: datetime, d: Duration, end: datetime) -> Period | None:
    """The recurrence period `[step(k), step(k+1))` whose truncated end is `end` (before truncation and before any
    continuity correction, which moves only the start)."""
    try:
        start, raw_end = period_bounds_at(anchor, d, end - _TICK)
    except (BeyondRangeError, ArithmeticError):
        return None
    return None if raw_end is None else Period(start, raw_end)


def _clamped_day(anchor: datetime, d: Duration, boundary: datetime) -> bool:
    """Whether a month-based boundary fell on a shorter month and took its last day (docs/sync.md §1.3)."""
    return bool(d.years or d.months) and boundary.day != anchor.day


def period_rule(view: SubscriptionView, c: Candidate) -> dict[str, Any]:
    """docs/sync.md §1.5, §2.4, §2.5, §3.4-§3.7: the three periods of a candidate and how each came about."""
    record, item, phase = view.record, c.item, c.phase
    anchor = record.billing_anchor
    cadence = item.rate_card.billing_cadence
    clamps: list[dict[str, str]] = []
    out: dict[str, Any] = {
        "index": None if c.one_time else c.index,
        "full_service_period": period_json(c.full),
        "service_period": period_json(c.service),
        "billing_period": period_json(c.billing),
    }
    if cadence is None:
        out["rule"] = "one_time"
        out["text"] = (
            "one-time item (docs/sync.md §3.5): the full service period runs from the version's start to its end, "
            "replaced by the phase end when the phase has one"
            + ("; the phase is open-ended, so the period is zero-length" if c.full.is_zero_length else "")
        )
    else:
        out["rule"] = "recurring"
        raw = _raw_period(anchor, cadence, c.full.end)
        k = boundary_index(anchor, cadence, raw.start) if raw is not None else None
        out["cadence"] = str(cadence)
        out["anchor"] = format_instant(anchor)
        out["boundary"] = k
        out["text"] = (
            f"period[{c.index}] of version v[{item.version}]: the {cadence} recurrence anchored at the subscription's "
            f"billing anchor {format_instant(anchor)}, boundaries step({k}) and step({'?' if k is None else k + 1}) "
            "(docs/sync.md §1.3, §2.5)"
        )
        if raw is not None:
            for name, boundary in (("start", raw.start), ("end", raw.end)):
                if _clamped_day(anchor, cadence, boundary):
                    clamps.append(
                        {
                            "kind": "month_end",
                            "text": f"the full period's {name} {format_instant(boundary)} is day {anchor.day} "
                            "clamped to the month's last day (docs/sync.md §1.3)",
                        }
                    )
            if trunc(raw.start) != c.full.start:
                clamps.append(
                    {
                        "kind": "continuity",
                        "text": f"the start moved to {format_instant(c.full.start)}, where the previous line was "
                        "extended by hand (force-continuous-lines, docs/sync.md §3.7)",
                    }
                )
    if c.service.start > c.full.start:
        clamps.append(
            {
                "kind": "version_start",
                "text": f"the service period starts at the version's start {format_instant(c.service.start)}, "
                "within the full period: a partial period (docs/sync.md §3.4)",
            }
        )
    if c.service.end < c.full.end:
        clamps.append({"kind": _end_cause(view, c), "text": _end_text(view, c)})
    if c.full.start != c.full.start.replace(microsecond=0) or item.start.microsecond or anchor.microsecond:
        clamps.append({"kind": "seconds", "text": "times truncated to whole seconds (docs/sync.md §1.1, §3.6)"})
    bp_raw = _billing_raw(view, c)
    if bp_raw is not None:
        if c.billing.start > trunc(bp_raw.start):
            clamps.append(
                {
                    "kind": "billing_phase_start",
                    "text": f"the billing period starts at the phase start {format_instant(c.billing.start)} "
                    "(docs/sync.md §2.4)",
                }
            )
        if c.billing.end < trunc(bp_raw.end):
            clamps.append(
                {
                    "kind": "billing_phase_end",
                    "text": f"the billing period ends at the phase end {format_instant(c.billing.end)} "
                    "(docs/sync.md §2.4)",
                }
            )
    out["billing_rule"] = (
        f"the subscription's {record.billing_cadence} period around the generation point, cut to phase "
        f"{phase.key!r} (docs/sync.md §2.4)"
    )
    out["clamps"] = clamps
    return out


def _billing_raw(view: SubscriptionView, c: Candidate) -> Period | None:
    try:
        start, end = period_bounds_at(view.record.billing_anchor, view.record.billing_cadence, c.billing.start)
    except (BeyondRangeError, ArithmeticError):
        return None
    return None if end is None else Period(start, end)


def _end_cause(view: SubscriptionView, c: Candidate) -> str:
    end = c.service.end
    if view.active_to is not None and trunc(view.active_to) == end:
        return "subscription_end"
    if c.phase.end is not None and trunc(c.phase.end) == end:
        return "phase_end"
    return "version_end"


def _end_text(view: SubscriptionView, c: Candidate) -> str:
    end = format_instant(c.service.end)
    cause = _end_cause(view, c)
    if cause == "subscription_end":
        return f"the service period is truncated to the subscription's end {end} (docs/sync.md §2.3, §3.4)"
    if cause == "phase_end":
        return f"the service period is truncated to the end of phase {c.phase.key!r} at {end} (docs/sync.md §2.3)"
    return f"the service period is truncated to the version's end {end} (docs/sync.md §2.3)"


def invoice_at_rule(c: Candidate) -> dict[str, Any]:
    """docs/sync.md §1.5."""
    if c.price.in_advance:
        rule, text = "in_advance", "a flat fee paid in advance: invoiceable at the billing period's start"
    else:
        rule = "in_arrears"
        text = "billed in arrears: invoiceable at the later of the service period's end and the billing period's end"
    return {"value": format_instant(trunc(c.invoice_at())), "rule": rule, "text": f"{text} (docs/sync.md §1.5)"}


def horizon_json(view: SubscriptionView, c: Candidate, as_of: datetime) -> dict[str, Any]:
    """docs/sync.md §3.2: whether a sync at `as_of` generates this period (one-time items always are)."""
    try:
        limit: datetime | None = horizon(view, c.phase, as_of)
    except (BeyondRangeError, ArithmeticError):
        limit = None
    within = c.one_time or (limit is not None and trunc(c.invoice_at()) <= trunc(limit))
    return {"as_of": format_instant(as_of), "limit": instant(limit), "within": within}


def line_proration(view: SubscriptionView, c: Candidate) -> dict[str, Any]:
    """docs/sync.md §1.7 and §3.9: the amount of a line and why it is (not) prorated."""
    currency = view.record.currency
    price = c.price
    if not isinstance(price, FlatPrice):
        return {"applies": False, "reason": "usage-based price: copied to the line unchanged (docs/sync.md §3.10)"}
    amount = flat_amount(view, c, price)
    base = {"price_amount": format_decimal(price.amount), "amount": format_decimal(amount)}
    s, f = c.service.seconds(), c.full.seconds()
    record = view.record
    if not record.pro_rating_enabled or record.pro_rating_mode != "prorate_prices":
        reason = "pro-rating is off for this subscription"
    elif c.service.is_empty:
        reason = "the service period is empty or zero-length: the full amount"
    elif not prorates(view, c):
        reason = "the period ends at or after the subscription's end: never prorated (docs/sync.md §3.9 rule 3)"
    elif s == f or f <= 0:
        reason = "a whole period: ratio 1"
    else:
        ratio = proration_ratio(s, f)
        return {
            "applies": True,
            "reason": f"{s} of {f} seconds served",
            "service_seconds": s,
            "full_seconds": f,
            "ratio": format_decimal(ratio),
            "rounding": f"round half away from zero to {currency}'s precision (docs/sync.md §1.7)",
            **base,
        }
    return {"applies": False, "reason": f"{reason} (docs/sync.md §3.9)", **base}


def charge_proration(view: SubscriptionView, c: Candidate) -> dict[str, Any]:
    """docs/credits.md §3.5: like a line, but a period cut by the subscription end is prorated too."""
    record, price = view.record, c.price
    if not isinstance(price, FlatPrice):
        return {"applies": False, "reason": "usage-based: the amount is rated from the quantity (docs/credits.md §3.5)"}
    s, f = c.service.seconds(), c.full.seconds()
    amount = flat_charge_amount(
        price.amount, c.service, c.full, record.pro_rating_enabled, record.pro_rating_mode, record.currency
    )
    base = {"price_amount": format_decimal(price.amount), "amount": format_decimal(amount)}
    if not record.pro_rating_enabled or record.pro_rating_mode != "prorate_prices":
        return {"applies": False, "reason": "pro-rating is off for this subscription", **base}
    if not 0 < s < f:
        return {"applies": False, "reason": "a whole (or empty) period: no proration (docs/credits.md §3.5)", **base}
    return {
        "applies": True,
        "reason": f"{s} of {f} seconds served (docs/credits.md §3.5)",
        "service_seconds": s,
        "full_seconds": f,
        "ratio": format_decimal(proration_ratio(s, f)),
        "rounding": f"round half away from zero to {record.currency}'s precision (docs/sync.md §1.7)",
        **base,
    }


def line_amount(view: SubscriptionView, c: Candidate) -> Decimal | None:
    """The flat amount a line of this candidate carries (None: a usage price)."""
    return flat_amount(view, c, c.price) if isinstance(c.price, FlatPrice) else None


def describe(view: SubscriptionView, c: Candidate, as_of: datetime, *, charge: bool) -> dict[str, Any]:
    """The whole derivation of one candidate (docs/sync.md §10.1; the JSON shape is documented
    there)."""
    record, item, phase = view.record, c.item, c.phase
    position = next(i for i, p in enumerate(view.phases) if p.id == phase.id)
    rc = item.rate_card
    return {
        "subscription": {
            "id": record.id,
            "customer_id": record.customer_id,
            "currency": record.currency,
            "billing_cadence": str(record.billing_cadence),
            "billing_anchor": format_instant(record.billing_anchor),
            "active_from": format_instant(record.active_from),
            "active_to": instant(record.active_to),
            "pro_rating": {"enabled": record.pro_rating_enabled, "mode": record.pro_rating_mode},
        },
        "phase": {
            "key": phase.key,
            "id": phase.id,
            "position": position,
            "start": format_instant(phase.start),
            "end": instant(phase.end),
        },
        "item": {
            "key": item.record.key,
            "id": item.record.id,
            "version": item.version,
            "active_from": format_instant(item.record.active_from),
            "active_to": instant(item.record.active_to),
            "window": {"from": format_instant(item.start), "to": instant(item.end)},
        },
        "rate_card": {
            "name": rc.name,
            "billing_cadence": None if rc.billing_cadence is None else str(rc.billing_cadence),
            "price": price_json(rc.price),
            "feature_key": rc.feature_key,
        },
        "period": period_rule(view, c),
        "invoice_at": invoice_at_rule(c),
        "horizon": horizon_json(view, c, as_of),
        "billable": is_billable(c),
        "proration": charge_proration(view, c) if charge else line_proration(view, c),
        "discounts": dict(rc.discounts) if rc.discounts else None,
    }


def rounded(amount: Decimal | None, currency: str) -> Decimal | None:
    return None if amount is None else round_cur(amount, currency)
