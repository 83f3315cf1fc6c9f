"""docs/sync.md §12 worked examples, each as a test of the pure core (target, plan, updater)."""

from decimal import Decimal

from tests.domain.builders import (
    ISSUED,
    flat,
    item,
    line_from,
    lines_by_id,
    p,
    persisted_from,
    phase,
    state,
    sub,
    t,
    target,
    unit,
)
from worker.domain.persisted import FORCE_CONTINUOUS, IGNORE, PersistedGroup
from worker.domain.planner import CreateLine, DeleteLine, UpdateGroup, UpdateLine, plan
from worker.domain.prices import FlatPrice
from worker.domain.updater import resolve


def amount(line) -> Decimal:  # type: ignore[no-untyped-def]
    assert isinstance(line.price, FlatPrice)
    return line.price.amount


def ids():  # type: ignore[no-untyped-def]
    n = iter(range(1000))
    return lambda: f"new_{next(n)}"


# 12.1 ---------------------------------------------------------------------------------------
def view_12_1():  # type: ignore[no-untyped-def]
    return sub(
        phase("default", "2024-01-15", item("platform-fee", flat("100"), "2024-01-15")),
        start="2024-01-15",
        anchor="2024-01-01",
    )


def test_12_1_first_sync_at_period_start_prorates_and_stops_at_horizon() -> None:
    tgt = target(view_12_1(), "2024-01-15")
    lines = lines_by_id(tgt)
    assert list(lines) == ["default/platform-fee/v[0]/period[0]"]
    line = lines["default/platform-fee/v[0]/period[0]"]
    assert line.service_period == p("2024-01-15", "2024-02-01")
    assert line.billing_period == p("2024-01-15", "2024-02-01")
    assert line.invoice_at == t("2024-01-15")
    assert amount(line) == Decimal("54.84")
    assert tgt.max_limit == t("2024-01-15")


def test_12_1_next_sync_an_hour_later_adds_period_1() -> None:
    first = target(view_12_1(), "2024-01-15")
    tgt = target(view_12_1(), "2024-01-15T01:00", persisted_from(first))
    lines = lines_by_id(tgt)
    assert list(lines) == ["default/platform-fee/v[0]/period[0]", "default/platform-fee/v[0]/period[1]"]
    second = lines["default/platform-fee/v[0]/period[1]"]
    assert second.service_period == p("2024-02-01", "2024-03-01")
    assert second.invoice_at == t("2024-02-01")
    assert amount(second) == Decimal("100")
    assert tgt.max_limit == t("2024-02-01")
    patches = plan(tgt.lines, persisted_from(first)).patches
    assert [type(x) for x in patches] == [CreateLine]
    assert patches[0].identity.endswith("period[1]")


# 12.2 ---------------------------------------------------------------------------------------
def test_12_2_anchor_on_the_31st() -> None:
    view = sub(
        phase("default", "2025-07-10T15:00", item("api", unit("100"), "2025-07-10T15:00", feature_key="api_requests")),
        start="2025-07-10T15:00",
        anchor="2025-01-31T15:00",
    )
    tgt = target(view, "2025-09-29T15:00")
    lines = lines_by_id(tgt)
    assert {k: (v.service_period, v.invoice_at) for k, v in lines.items()} == {
        "default/api/v[0]/period[0]": (p("2025-07-10T15:00", "2025-07-31T15:00"), t("2025-07-31T15:00")),
        "default/api/v[0]/period[1]": (p("2025-07-31T15:00", "2025-08-31T15:00"), t("2025-08-31T15:00")),
        "default/api/v[0]/period[2]": (p("2025-08-31T15:00", "2025-09-30T15:00"), t("2025-09-30T15:00")),
    }
    for line in lines.values():
        assert line.billing_period == line.service_period
        assert line.feature_key == "api_requests"
    assert tgt.max_limit == t("2025-09-30T15:00")


# 12.3 ---------------------------------------------------------------------------------------
def test_12_3_usage_line_across_an_inserted_phase() -> None:
    before = sub(phase("first", "2024-01-01", item("api", unit("10"), "2024-01-01")))
    first = target(before, "2024-02-01")
    assert [(k, v.service_period) for k, v in lines_by_id(first).items()] == [
        ("first/api/v[0]/period[0]", p("2024-01-01", "2024-02-01"))
    ]
    persisted = persisted_from(first)
    after = sub(
        phase("first", "2024-01-01", item("api", unit("10"), "2024-01-01")),
        phase("second", "2024-01-03", item("api", unit("5"), "2024-01-03")),
    )
    tgt = target(after, "2024-02-01", persisted)
    lines = lines_by_id(tgt)
    assert lines["first/api/v[0]/period[0]"].service_period == p("2024-01-01", "2024-01-03")
    assert lines["first/api/v[0]/period[0]"].billing_period == p("2024-01-01", "2024-01-03")
    assert lines["first/api/v[0]/period[0]"].invoice_at == t("2024-01-03")
    assert lines["second/api/v[0]/period[0]"].service_period == p("2024-01-03", "2024-02-01")
    assert "second/api/v[0]/period[1]" not in lines
    patches = plan(tgt.lines, persisted).patches
    shrink, create = patches
    assert isinstance(shrink, UpdateLine) and shrink.reason == "shrink"
    assert shrink.service_period == p("2024-01-01", "2024-01-03") and shrink.invoice_at == t("2024-01-03")
    assert isinstance(create, CreateLine) and create.identity == "sub_01/second/api/v[0]/period[0]"
    changes = resolve(plan(tgt.lines, persisted), persisted, gathering_invoice_id="inv_g", new_id=ids())
    # the stored billing period is kept
    assert changes.line_writes[0].billing_period == p("2024-01-01", "2024-02-01")


# 12.4 ---------------------------------------------------------------------------------------
def view_12_4(end: str | None = None):  # type: ignore[no-untyped-def]
    return sub(
        phase("default", "2024-01-01", item("seats", flat("30"), "2024-01-01"), item("api", unit("0.1"), "2024-01-01")),
        end=end,
    )


def test_12_4_cancellation_mid_period() -> None:
    first = target(view_12_4(), "2024-01-10")
    lines = lines_by_id(first)
    assert {k: (v.service_period, v.invoice_at) for k, v in lines.items()} == {
        "default/api/v[0]/period[0]": (p("2024-01-01", "2024-02-01"), t("2024-02-01")),
        "default/seats/v[0]/period[0]": (p("2024-01-01", "2024-02-01"), t("2024-01-01")),
        "default/seats/v[0]/period[1]": (p("2024-02-01", "2024-03-01"), t("2024-02-01")),
    }
    persisted = persisted_from(first)
    tgt = target(view_12_4("2024-01-20"), "2024-01-20", persisted)
    lines = lines_by_id(tgt)
    seats = lines["default/seats/v[0]/period[0]"]
    assert seats.service_period == p("2024-01-01", "2024-01-20") and amount(seats) == Decimal("30")
    assert list(lines) == ["default/api/v[0]/period[0]", "default/seats/v[0]/period[0]"]
    patches = plan(tgt.lines, persisted).patches
    assert [(type(x).__name__, x.identity.split("/", 2)[2], x.reason) for x in patches] == [
        ("DeleteLine", "seats/v[0]/period[1]", "delete"),
        ("UpdateLine", "api/v[0]/period[0]", "shrink"),
        ("UpdateLine", "seats/v[0]/period[0]", "prorate"),
    ]
    api, seats_patch = patches[1], patches[2]
    assert isinstance(api, UpdateLine) and api.invoice_at == t("2024-01-20")
    assert isinstance(seats_patch, UpdateLine) and seats_patch.price is None
    assert seats_patch.invoice_at == t("2024-01-01")


def test_12_4_cancellation_when_seats_was_invoiced_and_issued() -> None:
    first = target(view_12_4(), "2024-01-10")
    lines = lines_by_id(first)
    seats0 = line_from(lines["default/seats/v[0]/period[0]"], invoice=ISSUED)
    persisted = state(
        seats0, line_from(lines["default/seats/v[0]/period[1]"]), line_from(lines["default/api/v[0]/period[0]"])
    )
    tgt = target(view_12_4("2024-01-20"), "2024-01-20", persisted)
    changes = resolve(plan(tgt.lines, persisted), persisted, gathering_invoice_id="inv_g", new_id=ids())
    assert [i.message for i in changes.issues] == [
        "flat fee line's service period cannot be changed on immutable invoice"
    ]
    assert changes.issues[0].path == f"lines/{seats0.id}"
    assert seats0.id not in {w.line_id for w in changes.line_writes}
    assert [pt.op for pt in changes.patches] == ["line_delete", "line_update", "validation_issue"]


def test_12_4_contrast_phase_change_prorates() -> None:
    view = sub(
        phase("default", "2024-01-01", item("seats", flat("30"), "2024-01-01")),
        phase("next", "2024-01-20", item("other", flat("1"), "2024-01-20")),
    )
    lines = lines_by_id(target(view, "2024-01-10"))
    assert amount(lines["default/seats/v[0]/period[0]"]) == Decimal("18.39")


# 12.5 ---------------------------------------------------------------------------------------
def progressive_state(g_start="2024-01-01", split="2024-01-02", g_end="2024-02-01", d=None):  # type: ignore[no-untyped-def]
    from tests.domain.builders import DRAFT, GATHERING

    base = lines_by_id(
        target(sub(phase("default", "2024-01-01", item("api", unit("5"), "2024-01-01"))), "2024-01-01T00:01")
    )
    tl = base["default/api/v[0]/period[0]"]
    first = line_from(
        tl,
        id="L",
        invoice=d or DRAFT,
        unique_reference_id=None,
        split_line_group_id="G",
        service_period=p(g_start, split),
        invoice_at=t(split),
    )
    second = line_from(
        tl,
        id="L2",
        invoice=GATHERING,
        unique_reference_id=None,
        split_line_group_id="G",
        service_period=p(split, g_end),
    )
    group = PersistedGroup("G", tl.identity, p(g_start, g_end), (first, second))
    return state(groups=(group,)), first, second


def cancelled_view(end: str):  # type: ignore[no-untyped-def]
    return sub(phase("default", "2024-01-01", item("api", unit("5"), "2024-01-01")), end=end)


def test_12_5_cancel_after_the_split_shrinks_the_last_child_and_the_group() -> None:
    persisted, _, _ = progressive_state()
    tgt = target(cancelled_view("2024-01-15"), "2024-01-15", persisted)
    patches = plan(tgt.lines, persisted).patches
    assert len(patches) == 2
    child, group = patches
    assert isinstance(child, UpdateLine) and child.line.id == "L2"
    assert child.service_period == p("2024-01-02", "2024-01-15") and child.invoice_at == t("2024-01-15")
    assert isinstance(group, UpdateGroup) and group.service_period == p("2024-01-01", "2024-01-15")


def test_12_5_cancel_exactly_at_the_split_deletes_the_emptied_child() -> None:
    persisted, _, _ = progressive_state()
    tgt = target(cancelled_view("2024-01-02T00:00:00.010"), "2024-01-02T00:00:00.010", persisted)
    patches = plan(tgt.lines, persisted).patches
    child, group = patches
    assert isinstance(child, DeleteLine) and child.line.id == "L2"
    assert isinstance(group, UpdateGroup) and group.service_period.end == t("2024-01-02")
    changes = resolve(plan(tgt.lines, persisted), persisted, gathering_invoice_id="inv_g", new_id=ids())
    assert changes.line_deletes == ["L2"] and changes.touched_invoices == {"inv_g"}


def test_12_5_cancel_before_the_split_on_draft_and_on_issued() -> None:
    persisted, _, _ = progressive_state()
    tgt = target(cancelled_view("2024-01-01T12:00"), "2024-01-01T12:00", persisted)
    patches = plan(tgt.lines, persisted).patches
    first, second, group = patches
    assert (
        isinstance(first, UpdateLine)
        and first.line.id == "L"
        and first.service_period == p("2024-01-01", "2024-01-01T12:00")
    )
    assert first.invoice_at == t("2024-01-02")  # draft: invoice_at unchanged
    assert isinstance(second, DeleteLine) and second.line.id == "L2"
    assert isinstance(group, UpdateGroup) and group.service_period.end == t("2024-01-01T12:00")

    persisted, _, _ = progressive_state(d=ISSUED)
    changes = resolve(plan(tgt.lines, persisted), persisted, gathering_invoice_id="inv_g", new_id=ids())
    assert [i.message for i in changes.issues] == [
        "usage based line's service period cannot be changed on immutable invoice "
        "(new period: 2024-01-01T00:00:00Z - 2024-01-01T12:00:00Z)"
    ]
    assert [pt.op for pt in changes.patches] == ["validation_issue", "line_delete", "group_update"]


# 12.6 ---------------------------------------------------------------------------------------
def test_12_6_one_time_in_arrears_is_not_billable_until_the_phase_ends() -> None:
    view = sub(
        phase("default", "2024-01-01", item("setup", flat("5", "in_arrears"), "2024-01-01", cadence=None)),
        anchor="2023-12-15",
    )
    assert target(view, "2024-02-01").lines == ()
    cancelled = sub(
        phase("default", "2024-01-01", item("setup", flat("5", "in_arrears"), "2024-01-01", cadence=None)),
        anchor="2023-12-15",
        end="2024-01-15",
    )
    (line,) = target(cancelled, "2024-01-15").lines
    assert line.identity == "sub_01/default/setup/v[0]"
    assert line.service_period == p("2024-01-01", "2024-01-15")
    assert line.billing_period == p("2024-01-01", "2024-01-15")
    assert line.invoice_at == t("2024-01-15") and amount(line) == Decimal("5")


def test_12_6_one_time_in_advance() -> None:
    view = sub(
        phase("default", "2024-01-01", item("setup", flat("5"), "2024-01-01", cadence=None)), anchor="2023-12-15"
    )
    (line,) = target(view, "2024-02-01").lines
    assert line.service_period == p("2024-01-01", "2024-01-01")
    assert line.billing_period == p("2024-01-01", "2024-01-15")
    assert line.invoice_at == t("2024-01-01") and amount(line) == Decimal("5")


# 12.7 ---------------------------------------------------------------------------------------
def test_12_7_price_change_creates_a_new_version() -> None:
    v0 = sub(phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01", id="it_v0")))
    persisted = persisted_from(target(v0, "2024-02-01"))
    v1 = sub(
        phase(
            "default",
            "2024-01-01",
            item("fee", flat("10"), "2024-01-01", "2024-01-02", id="it_v0"),
            item("fee", flat("20"), "2024-01-02", id="it_v1"),
        )
    )
    tgt = target(v1, "2024-02-01", persisted)
    lines = lines_by_id(tgt)
    assert {k: (v.service_period, v.billing_period, v.invoice_at, amount(v)) for k, v in lines.items()} == {
        "default/fee/v[0]/period[0]": (
            p("2024-01-01", "2024-01-02"),
            p("2024-01-01", "2024-02-01"),
            t("2024-01-01"),
            Decimal("0.32"),
        ),
        "default/fee/v[1]/period[0]": (
            p("2024-01-02", "2024-02-01"),
            p("2024-01-01", "2024-02-01"),
            t("2024-01-01"),
            Decimal("19.35"),
        ),
        "default/fee/v[1]/period[1]": (
            p("2024-02-01", "2024-03-01"),
            p("2024-02-01", "2024-03-01"),
            t("2024-02-01"),
            Decimal("20"),
        ),
    }
    patches = plan(tgt.lines, persisted).patches
    assert [(type(x).__name__, x.reason) for x in patches] == [
        ("DeleteLine", "delete"),
        ("UpdateLine", "prorate"),
        ("CreateLine", "create"),
        ("CreateLine", "create"),
    ]
    prorate = patches[1]
    assert isinstance(prorate, UpdateLine) and prorate.price == FlatPrice(Decimal("0.32"), "in_advance")


def test_12_7_proration_rounding_to_zero_removes_the_line() -> None:
    v0 = sub(phase("default", "2024-01-01", item("fee", flat("5"), "2024-01-01", id="it_v0")))
    persisted = persisted_from(target(v0, "2024-02-01"))
    v1 = sub(
        phase(
            "default",
            "2024-01-01",
            item("fee", flat("5"), "2024-01-01", "2024-01-01T00:00:40", id="it_v0"),
            item("fee", flat("10"), "2024-01-01T00:00:40", id="it_v1"),
        )
    )
    tgt = target(v1, "2024-02-01", persisted)
    assert "default/fee/v[0]/period[0]" not in lines_by_id(tgt)
    patches = plan(tgt.lines, persisted).patches
    deleted = {x.identity for x in patches if isinstance(x, DeleteLine)}
    assert "sub_01/default/fee/v[0]/period[0]" in deleted


# 12.8 ---------------------------------------------------------------------------------------
def test_12_8_force_continuous_lines() -> None:
    view = sub(phase("default", "2025-01-31", item("fee", flat("6"), "2025-01-31")), start="2025-01-31")
    first = target(view, "2025-01-31")
    (line0,) = first.lines
    assert line0.service_period == p("2025-01-31", "2025-02-28")
    edited = line_from(
        line0, service_period=p("2025-01-31", "2025-03-02"), annotations={IGNORE: True, FORCE_CONTINUOUS: True}
    )
    persisted = state(edited)
    tgt = target(view, "2025-02-28", persisted)
    lines = lines_by_id(tgt)
    nxt = lines["default/fee/v[0]/period[1]"]
    assert nxt.service_period == p("2025-03-02", "2025-03-31")
    assert nxt.billing_period == p("2025-03-02", "2025-03-31")
    assert nxt.invoice_at == t("2025-03-02") and amount(nxt) == Decimal("6")
    patches = plan(tgt.lines, persisted).patches
    assert [type(x) for x in patches] == [CreateLine]  # period[0] is ignored


def test_force_continuous_needs_true_values_not_truthy() -> None:
    view = sub(phase("default", "2025-01-31", item("fee", flat("6"), "2025-01-31")), start="2025-01-31")
    (line0,) = target(view, "2025-01-31").lines
    edited = line_from(
        line0, service_period=p("2025-01-31", "2025-03-02"), annotations={IGNORE: True, FORCE_CONTINUOUS: "true"}
    )
    nxt = lines_by_id(target(view, "2025-02-28", state(edited)))["default/fee/v[0]/period[1]"]
    assert nxt.service_period == p("2025-02-28", "2025-03-31")


# docs/sync.md §7 ------------------------------------------------------------------------------------
def test_sync_state_rules() -> None:
    from worker.domain.sync_state import NOTHING_TO_BILL, after_sync, customer_deleted_before_start

    assert after_sync(t("2024-02-01"), t("2024-01-15")).next_sync_after == t("2024-02-01")
    assert after_sync(None, t("2024-01-15")).next_sync_after == t("2024-01-15")
    assert NOTHING_TO_BILL.has_billables is False and NOTHING_TO_BILL.next_sync_after is None
    assert customer_deleted_before_start(t("2024-01-01"), t("2024-01-01"))
    assert not customer_deleted_before_start(t("2024-01-02"), t("2024-01-01"))
    assert not customer_deleted_before_start(None, t("2024-01-01"))


# docs/sync.md §3.1-§3.3 quirks ----------------------------------------------------------------------
def test_free_trial_then_paid_phase_uses_the_paid_phase_minimum_billable_time() -> None:
    view = sub(
        phase("trial", "2024-01-01", item("seats", None, "2024-01-01")),
        phase("paid", "2024-02-15", item("seats", flat("31"), "2024-02-15")),
    )
    tgt = target(view, "2024-01-10")
    lines = lines_by_id(tgt)
    assert list(lines) == ["paid/seats/v[0]/period[0]"]
    assert lines["paid/seats/v[0]/period[0]"].invoice_at == t("2024-02-15")
    assert tgt.max_limit == t("2024-02-15")


def test_loop_stops_after_the_first_processed_phase_that_has_not_ended() -> None:
    view = sub(
        phase("one", "2024-01-01", item("fee", flat("10"), "2024-01-01")),
        phase("two", "2024-01-20", item("fee", flat("20"), "2024-01-20")),
    )
    # horizon Feb 1 would admit phase two's first line (invoice_at Jan 1 billing start), but the
    # loop stops after phase one, which has not ended before as_of
    assert [k.split("/")[0] for k in lines_by_id(target(view, "2024-01-10"))] == ["one"]
    # once phase one has ended before as_of, phase two is processed too
    assert "two/fee/v[0]/period[0]" in lines_by_id(target(view, "2024-01-25"))


def test_horizon_at_a_period_start_includes_in_advance_but_not_in_arrears() -> None:
    view = sub(
        phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01"), item("api", unit("1"), "2024-01-01"))
    )
    at_start = lines_by_id(target(view, "2024-02-01"))
    assert "default/fee/v[0]/period[1]" in at_start and "default/api/v[0]/period[1]" not in at_start
    later = lines_by_id(target(view, "2024-02-01T00:00:00.000001"))
    assert "default/api/v[0]/period[1]" in later and "default/fee/v[0]/period[2]" in later


def test_one_time_in_advance_item_clamped_to_the_cancellation_still_bills_in_full() -> None:
    view = sub(phase("default", "2024-01-01", item("setup", flat("5"), "2024-02-01", cadence=None)), end="2024-01-20")
    (line,) = target(view, "2024-01-20").lines
    assert line.service_period == p("2024-01-20", "2024-01-20") and amount(line) == Decimal("5")


def test_period_ending_at_the_subscription_end_is_never_prorated_even_a_first_partial_one() -> None:
    view = sub(
        phase("default", "2024-01-15", item("fee", flat("31"), "2024-01-15")),
        start="2024-01-15",
        anchor="2024-01-01",
        end="2024-02-01",
    )
    (line,) = target(view, "2024-01-20").lines
    assert line.service_period == p("2024-01-15", "2024-02-01") and amount(line) == Decimal("31")


def test_currency_precision_applies_to_prorated_amounts() -> None:
    view = sub(
        phase("default", "2024-01-15", item("fee", flat("1000"), "2024-01-15")),
        start="2024-01-15",
        anchor="2024-01-01",
        currency="JPY",
    )
    assert amount(target(view, "2024-01-15").lines[0]) == Decimal("548")
    view = sub(
        phase("default", "2024-01-15", item("fee", flat("100"), "2024-01-15")),
        start="2024-01-15",
        anchor="2024-01-01",
        currency="BHD",
    )
    assert amount(target(view, "2024-01-15").lines[0]) == Decimal("54.839")


def test_sub_second_inputs_are_truncated_in_results() -> None:
    view = sub(
        phase("default", "2024-01-01T00:00:00.123456", item("api", unit("1"), "2024-01-01T00:00:00.123456")),
        start="2024-01-01T00:00:00.123456",
    )
    (line,) = target(view, "2024-01-10").lines
    assert line.service_period == p("2024-01-01", "2024-02-01T00:00:00.123456".replace(".123456", ""))
