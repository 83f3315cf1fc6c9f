"""Issue 17, "accepted means syncable": every document that `subscriptions apply` accepts can be synced at
any `as_of` in the accepted range (1970–9998) without a domain error — it may plan nothing. The structural
rules of docs/contract.md §3 (`worker.domain.structure`) are what makes it so.

The documents are generated around the edges the rules are about: phase starts equal to, after and
before the subscription start, ties, versions that start before, at or after their phase (and the next
one), zero-length and sub-second versions, phases with and without ends, one-time items with every price
type, usage prices with and without feature key, cadences from PT1S to P100Y, and times from 1970 to 9998.
Most are accepted; those refused must be refused by a rule, not crash. Accepted ones go through the real
path: `apply` into Postgres, then `sync_subscription` (what the worker runs) at two or three `as_of`s in a
row, so that later syncs also plan against the lines the earlier ones wrote.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, find, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tests.builders import flat, item_version, rate_card
from worker.app.sync import sync_subscription
from worker.contract.documents import SubscriptionDocument, validate_document
from worker.contract.problems import DocumentError
from worker.contract.text import format_time
from worker.domain.errors import DomainError
from worker.store.customers import upsert_customer
from worker.store.subscriptions import apply_subscription
from worker.store.tables import ALL_TABLES

MIN = datetime(1970, 1, 1, tzinfo=UTC)
MAX = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
CADENCES = ["PT1S", "PT1.5S", "PT1M", "PT1H", "P1D", "P1W", "P1M", "P1M1DT1S", "P3M", "P1Y", "P100Y"]
TIMES = st.one_of(
    st.sampled_from(
        [
            MIN,
            datetime(2024, 1, 31, 10, 0, 0, 500000, tzinfo=UTC),
            datetime(2024, 2, 29, tzinfo=UTC),
            datetime(9998, 12, 31, 23, 59, 59, tzinfo=UTC),
            MAX,
        ]
    ),
    st.datetimes(min_value=MIN.replace(tzinfo=None), max_value=MAX.replace(tzinfo=None)).map(
        lambda t: t.replace(tzinfo=UTC)
    ),
)
#: Offsets around an instant: equal, sub-second, a second, days, years; both signs where it matters.
SMALL = [timedelta(0), timedelta(microseconds=300_000), timedelta(seconds=1), timedelta(days=1)]
OFFSETS = st.one_of(
    st.sampled_from([*SMALL, timedelta(days=31), timedelta(days=400), timedelta(days=365 * 50)]),
    st.integers(0, 10**9).map(lambda s: timedelta(seconds=s)),
)
PRICES: list[dict[str, Any] | None] = [
    None,
    flat("100"),
    flat("0"),
    flat("99.999", "in_arrears"),
    flat("1" * 19 + "." + "1" * 19),
    {"type": "unit", "amount": "0.01"},
    {"type": "tiered", "mode": "volume", "tiers": [{"up_to_amount": None, "flat_price": "5", "unit_price": None}]},
    {"type": "package", "amount": "10", "quantity_per_package": "100"},
    {"type": "dynamic", "multiplier": "1.5", "minimum_amount": "1"},
]


def clamp(t: datetime) -> datetime:
    return min(max(t, MIN), MAX)


def shifted(draw: st.DrawFn, base: datetime, allow_before: bool = True) -> datetime:
    offset = draw(OFFSETS)
    sign = -1 if allow_before and draw(st.integers(0, 3)) == 0 else 1
    try:
        return clamp(base + sign * offset)
    except OverflowError:
        return MIN if sign < 0 else MAX


def inside(draw: st.DrawFn, base: datetime, before: datetime | None) -> datetime:
    """Mostly an instant in `[base, before)`; sometimes anywhere around `base` (the edges the rules are about)."""
    how = draw(st.sampled_from(["at", "at", "inside", "inside", "anywhere"]))
    if how == "at":
        return base
    if how == "anywhere" or before is None or before <= base:
        return shifted(draw, base)
    span = before - base
    return base + min(draw(OFFSETS), span - timedelta(microseconds=1))


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(TIMES)
    active_to = None if draw(st.booleans()) else shifted(draw, start, allow_before=False)
    # the first phase starts at, before or (refused) after the subscription; later ones at or after it
    first = start if draw(st.integers(0, 2)) else shifted(draw, start)
    starts = [first]
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 2, 3])) - 1):
        starts.append(shifted(draw, starts[-1], allow_before=False))  # ties (zero-length phases) included
    phases: list[dict[str, Any]] = []
    for p_index, phase_start in enumerate(starts):
        later = [s for s in starts if s > phase_start]
        next_start = min(later) if later else None
        items: dict[str, list[dict[str, Any]]] = {}
        for key in draw(st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=True)):
            versions = []
            version_start = inside(draw, max(phase_start, start), next_start)
            for _ in range(draw(st.integers(1, 2))):
                end = None if draw(st.booleans()) else shifted(draw, version_start, allow_before=False)
                price = draw(st.sampled_from(PRICES))
                usage = price is not None and price["type"] != "flat"
                feature = "feat" if usage and draw(st.integers(0, 4)) else None
                cadence = draw(st.sampled_from([*CADENCES, None]))
                card = rate_card(key, price, cadence=cadence, feature_key=feature)
                versions.append(item_version(format_time(version_start), end and format_time(end), card))
                if end is None:
                    break
                version_start = end
            items[key] = versions
        phases.append({"key": f"p{p_index}", "active_from": format_time(phase_start), "items": items})
    if draw(st.integers(0, 9)) == 9:
        phases = []
    return {
        "namespace": "acme",
        "id": "sub_01",
        "customer_id": "cust_01",
        "currency": draw(st.sampled_from(["USD", "JPY", "BHD"])),
        "billing_cadence": draw(st.sampled_from(CADENCES)),
        "billing_anchor": format_time(draw(st.one_of(st.just(start), TIMES))),
        "pro_rating": {"enabled": draw(st.booleans()), "mode": "prorate_prices"},
        "active_from": format_time(start),
        "active_to": active_to and format_time(active_to),
        "phases": phases,
    }


def accepted(doc: dict[str, Any]) -> SubscriptionDocument | None:
    try:
        return validate_document(doc)
    except DocumentError as exc:
        assert exc.lines() and all(": " in line for line in exc.lines())  # a refusal names its fields
        return None


def reset(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(table.name for table in ALL_TABLES)} CASCADE"))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents(), as_ofs=st.lists(TIMES, min_size=1, max_size=3))
def test_every_accepted_document_syncs_at_any_as_of_without_a_domain_error(
    db: Engine, doc: dict[str, Any], as_ofs: list[datetime]
) -> None:
    document = accepted(doc)
    event("accepted" if document is not None else "refused")
    if document is None:
        return
    reset(db)
    with db.begin() as conn:
        upsert_customer(conn, "acme", "cust_01")
        apply_subscription(conn, document)
    for as_of in as_ofs:
        try:
            sync_subscription(db, "acme", "sub_01", as_of=as_of, now=as_of)
        except DomainError as exc:  # pragma: no cover - the failure this test exists to find
            raise AssertionError(f"accepted document fails its sync at {format_time(as_of)}: {exc}") from exc


def test_the_generator_reaches_accepted_documents_at_the_edges() -> None:
    """The invariant is not vacuous: documents at each edge are accepted (and so synced above)."""
    found = [
        find(documents(), lambda d: accepted(d) is not None and len(d["phases"]) >= 2),
        find(documents(), lambda d: (doc := accepted(d)) is not None and doc.phases[0].active_from < doc.active_from),
        find(
            documents(),
            lambda d: (
                accepted(d) is not None
                and any(
                    v["rate_card"]["billing_cadence"] is None and v["rate_card"]["price"]
                    for p in d["phases"]
                    for vs in p["items"].values()
                    for v in vs
                )
            ),
        ),
    ]
    assert all(found)
