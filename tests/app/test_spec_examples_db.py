"""docs/sync.md §12 worked examples end to end against Postgres: seed, sync, read the stored lines back."""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from tests.builders import flat, item, phase, seed_subscription, t, unit
from worker.app.sync import sync_subscription
from worker.store.tables import invoice_lines


def stored(db: Engine) -> dict[str, tuple]:
    """identity → (service from, service to, billing from, billing to, invoice_at, amount or price type)."""
    with db.connect() as conn:
        rows = conn.execute(select(invoice_lines).where(invoice_lines.c.deleted_at.is_(None))).all()
    return {
        r.unique_reference_id.removeprefix("sub_01/"): (
            r.service_period_start,
            r.service_period_end,
            r.billing_period_start,
            r.billing_period_end,
            r.invoice_at,
            r.price.get("amount") if r.price["type"] == "flat" else r.price["type"],
        )
        for r in rows
    }


def test_12_2_anchor_on_the_31st(db: Engine) -> None:
    seed_subscription(
        db,
        phase("default", "2025-07-10T15:00", item("api", unit("100"), "2025-07-10T15:00")),
        start="2025-07-10T15:00",
        anchor="2025-01-31T15:00",
    )
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2025-09-29T15:00"))
    assert result.state.next_sync_after == t("2025-09-30T15:00")
    a, b, c, d = t("2025-07-10T15:00"), t("2025-07-31T15:00"), t("2025-08-31T15:00"), t("2025-09-30T15:00")
    assert stored(db) == {
        "default/api/v[0]/period[0]": (a, b, a, b, b, "unit"),
        "default/api/v[0]/period[1]": (b, c, b, c, c, "unit"),
        "default/api/v[0]/period[2]": (c, d, c, d, d, "unit"),
    }


def test_12_3_inserted_phase_shrinks_and_creates(db: Engine) -> None:
    first = phase("first", "2024-01-01", item("api", unit("10"), "2024-01-01", id="api1"))
    seed_subscription(db, first)
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-02-01"))
    seed_subscription(db, first, phase("second", "2024-01-03", item("api", unit("5"), "2024-01-03", id="api2")))
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-02-01"))
    assert [(p.op, p.reason) for p in result.patches] == [("line_update", "shrink"), ("line_create", "create")]
    j1, j3, f1 = t("2024-01-01"), t("2024-01-03"), t("2024-02-01")
    assert stored(db) == {
        "first/api/v[0]/period[0]": (j1, j3, j1, f1, j3, "unit"),  # billing period kept after a shrink
        "second/api/v[0]/period[0]": (j3, f1, j3, f1, f1, "unit"),
    }


def test_12_6_one_time_items(db: Engine) -> None:
    seed_subscription(
        db,
        phase(
            "default",
            "2024-01-01",
            item("setup", flat("5", "in_arrears"), "2024-01-01", cadence=None),
            item("onboard", flat("7"), "2024-01-01", cadence=None),
        ),
        anchor="2023-12-15",
    )
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-02-01"))
    j1, j15 = t("2024-01-01"), t("2024-01-15")
    assert stored(db) == {"default/onboard/v[0]": (j1, j1, j1, j15, j1, "7")}


def test_12_7_price_change_mid_period(db: Engine) -> None:
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01", id="v0")))
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-02-01"))
    seed_subscription(
        db,
        phase(
            "default",
            "2024-01-01",
            item("fee", flat("10"), "2024-01-01", "2024-01-02", id="v0"),
            item("fee", flat("20"), "2024-01-02", id="v1"),
        ),
    )
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-02-01"))
    assert [(p.op, p.reason) for p in result.patches] == [
        ("line_delete", "delete"),
        ("line_update", "prorate"),
        ("line_create", "create"),
        ("line_create", "create"),
    ]
    j1, j2, f1, m1 = t("2024-01-01"), t("2024-01-02"), t("2024-02-01"), t("2024-03-01")
    assert stored(db) == {
        "default/fee/v[0]/period[0]": (j1, j2, j1, f1, j1, "0.32"),
        "default/fee/v[1]/period[0]": (j2, f1, j1, f1, j1, "19.35"),
        "default/fee/v[1]/period[1]": (f1, m1, f1, m1, f1, "20"),
    }
    assert sync_subscription(db, "acme", "sub_01", as_of=t("2024-02-01")).patches == ()


def test_12_8_force_continuous_lines(db: Engine) -> None:
    seed_subscription(db, phase("default", "2025-01-31", item("fee", flat("6"), "2025-01-31")), start="2025-01-31")
    sync_subscription(db, "acme", "sub_01", as_of=t("2025-01-31"))
    with db.begin() as conn:
        conn.execute(
            update(invoice_lines).values(
                service_period_end=t("2025-03-02"),
                annotations={
                    "billing.subscription.sync.ignore": True,
                    "billing.subscription.sync.force-continuous-lines": True,
                },
            )
        )
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2025-02-28"))
    assert [p.op for p in result.patches] == ["line_create"]
    m2, m31 = t("2025-03-02"), t("2025-03-31")
    assert stored(db)["default/fee/v[0]/period[1]"] == (m2, m31, m2, m31, m2, "6")


def test_three_phases_five_items_two_years(db: Engine) -> None:
    """The issue's acceptance scenario: 3 phases, 5 items, 24 months of history; a second run is empty."""
    seed_subscription(
        db,
        phase("trial", "2023-01-01", item("seats", None, "2023-01-01")),
        phase(
            "standard",
            "2023-02-01",
            item("seats", flat("30"), "2023-02-01"),
            item("api", unit("0.1"), "2023-02-01"),
            item("setup", flat("100"), "2023-02-01", cadence=None),
        ),
        phase(
            "premium",
            "2023-07-15",
            item("seats", flat("50"), "2023-07-15"),
            item("api", unit("0.05"), "2023-07-15"),
            item("support", flat("20", "in_arrears"), "2023-07-15", cadence="P3M"),
        ),
        start="2023-01-01",
    )
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-12-20"))
    lines = stored(db)
    # standard: seats Feb..Jul 15 (6 lines, the last one partial), api likewise, setup once
    assert [k for k in lines if k.startswith("standard/seats")] == [
        f"standard/seats/v[0]/period[{i}]" for i in range(6)
    ]
    assert lines["standard/seats/v[0]/period[5]"][:2] == (t("2023-07-01"), t("2023-07-15"))
    assert lines["standard/seats/v[0]/period[5]"][5] == "13.55"  # 30 × 14/31, the phase change prorates
    assert lines["standard/setup/v[0]"][5] == "100"
    # premium: first partial month then monthly up to the horizon (in advance: January 2025 included)
    premium_seats = sorted(k for k in lines if k.startswith("premium/seats"))
    assert len(premium_seats) == 19 and lines["premium/seats/v[0]/period[0]"][5] == "27.42"  # 50 × 17/31
    assert lines["premium/seats/v[0]/period[18]"][:2] == (t("2025-01-01"), t("2025-02-01"))
    # in-arrears quarterly support: periods whose invoice_at is within the horizon (2025-01-01)
    support = [v for k, v in sorted(lines.items()) if k.startswith("premium/support")]
    # first quarter [Jul 1, Oct 1) is 92 days, served from Jul 15: 20 × 78/92 = 16.9565…
    assert all(v[4] <= t("2025-01-01") for v in support) and support[0][5] == "16.96"
    assert result.state.next_sync_after == t("2025-01-01")
    assert not any(k.startswith("trial/") for k in lines)
    again = sync_subscription(db, "acme", "sub_01", as_of=t("2024-12-20"))
    assert again.patches == ()
