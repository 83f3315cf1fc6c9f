"""`subsync preview` and `subscriptions apply --dry-run` against the real thing (docs/sync.md §10.2):
random documents and times T0 < T; the preview lists exactly what syncing and advancing at every due time up to T
then produce, and writes nothing (no row changes, no lock held after)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select, text

from tests.builders import apply, document, flat, item_version, rate_card, t, unique, unit
from worker.app.charges import advance_customer
from worker.app.credits import GrantRequest, grant_credit
from worker.app.invoicing import invoice_pending_lines
from worker.app.preview import charge_snapshot, dry_run_apply, line_snapshot, preview_document, preview_subscription
from worker.app.sync import sync_subscription
from worker.cli.presenters import patch_json
from worker.contract.documents import validate_document
from worker.store.tables import ALL_TABLES, charges, subscription_sync_states

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: a failing example is printed as drawn
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BASE = t("2024-01-01")


def dump(db: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every project table."""
    with db.connect() as conn:
        return {table.name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr) for table in ALL_TABLES}


def advisory_locks(db: Engine) -> int:
    with db.connect() as conn:
        count: int = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid() "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar_one()
    return count


ITEM = st.sampled_from(["advance", "arrears", "usage", "one_time"])


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    start = BASE + timedelta(days=draw(st.integers(0, 40)))
    kinds = draw(st.lists(ITEM, min_size=1, max_size=3))
    items: dict[str, list[dict[str, Any]]] = {}
    for n, kind in enumerate(kinds):
        begin = start + timedelta(days=draw(st.integers(0, 45)))
        amount = str(draw(st.integers(1, 300)))
        price = flat(amount)
        cadence: str | None = "P1M"
        feature: str | None = None
        if kind == "arrears":
            price = flat(amount, "in_arrears")
        elif kind == "usage":
            price, feature = unit("0.5"), "api-calls"
        elif kind == "one_time":
            cadence = None
        card = rate_card(f"item {n}", price, cadence=cadence, feature_key=feature)
        items[f"k{n}"] = [item_version(begin.isoformat(), None, card, id=f"it_{n}")]
    end: str | None = None
    if draw(st.booleans()):
        end = (start + timedelta(days=draw(st.integers(20, 200)), hours=draw(st.integers(0, 23)))).isoformat()
    mode = draw(st.sampled_from(["invoice_only", "credit_then_invoice", "credit_only"]))
    t0 = start + timedelta(days=draw(st.integers(-10, 90)), hours=draw(st.integers(0, 23)))
    to = t0 + timedelta(days=draw(st.integers(1, 150)))
    synced_before, invoice = draw(st.booleans()), draw(st.booleans())
    return {
        "items": items,
        "start": start,
        "end": end,
        "mode": mode,
        "t0": t0,
        "to": to,
        "before": synced_before,
        "invoice": invoice,
    }


def build(ns: str, s: dict[str, Any]) -> dict[str, Any]:
    doc = document(ns, s["items"], start=s["start"].isoformat(), active_to=s["end"])
    doc["settlement_mode"] = s["mode"]
    return doc


def rows_of(db: Engine, ns: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What billing holds for the subscription: lines and charges, their identity, periods, amounts, invoice_at."""
    with db.connect() as conn:
        lines = line_snapshot(conn, ns, "sub_1")
        charge_rows = charge_snapshot(conn, ns, "sub_1")
    return comparable_lines(lines.values()), comparable_charges(charge_rows.values())


def comparable_lines(rows: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (
            (r["unique_reference_id"], repr(r["service_period"]), r["amount"], r["invoice_at"], r["invoice_type"])
            for r in rows
        ),
        key=repr,
    )


def comparable_charges(rows: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (
            (
                r["unique_reference_id"],
                repr(r["service_period"]),
                r["amount"],
                r["invoice_at"],
                r["status"],
                repr([(a["grant_id"], a["kind"], a["amount"]) for a in r["allocations"]]),
            )
            for r in rows
        ),
        key=repr,
    )


def expected_after(before: dict[str, dict[str, Any]], listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored rows, with the preview's changes applied."""
    out = dict(before)
    for row in listed:
        body = {k: v for k, v in row.items() if k != "change"}
        if row["change"] == "deleted":
            out.pop(row["id"])
        else:
            out[row["id"]] = body
    return list(out.values())


def run_for_real(db: Engine, ns: str, t0: datetime, to: datetime, invoice: bool) -> None:
    """The worker's timeline, from the stored due times: a sync at T0, then a sync whenever the sync state's
    `next_sync_after` is reached (at least a second after the last sync) and an advance whenever a charge's
    `advance_after` is, up to T (no more syncs once the horizon falls behind: the subscription has ended); with
    `invoice`, the after-sync invoicing of docs/sync.md §8.3 after each sync."""
    at: datetime | None = t0
    sync_due: datetime | None = t0
    while at is not None and at <= to:
        if sync_due is not None and sync_due <= at:
            sync_subscription(db, ns, "sub_1", as_of=at, now=at)
            if invoice:
                invoice_pending_lines(db, ns, "cust_1", as_of=at, now=at)
            with db.connect() as conn:
                state = conn.execute(
                    select(subscription_sync_states).where(subscription_sync_states.c.namespace == ns)
                ).one()
            ended = not state.has_billables or state.next_sync_after is None or state.next_sync_after < at
            sync_due = None if ended else max(state.next_sync_after, at + timedelta(seconds=1))
        advance_customer(db, ns, "cust_1", as_of=at, now=at)
        with db.connect() as conn:
            charge_due = conn.execute(
                select(func.min(charges.c.advance_after)).where(
                    charges.c.namespace == ns, charges.c.deleted_at.is_(None), charges.c.advance_after > at
                )
            ).scalar_one()
        upcoming = [x for x in (sync_due, charge_due) if x is not None]
        at = min(upcoming) if upcoming else None


@SETTINGS
@given(scenarios())
def test_preview_lists_exactly_what_syncing_and_advancing_produce(db: Engine, s: dict[str, Any]) -> None:
    ns = unique("preview")
    apply(db, build(ns, s))
    if s["mode"] != "invoice_only":
        grant_credit(db, ns, GrantRequest("cust_1", "USD", Decimal("250"), effective_at=BASE), now=BASE)
    if s["before"]:
        sync_subscription(db, ns, "sub_1", as_of=s["t0"] - timedelta(days=20), now=s["t0"] - timedelta(days=20))
    with db.connect() as conn:
        lines_before, charges_before = line_snapshot(conn, ns, "sub_1"), charge_snapshot(conn, ns, "sub_1")
    stored = dump(db)

    preview = preview_subscription(db, ns, "sub_1", start=s["t0"], to=s["to"], invoice=s["invoice"])

    assert dump(db) == stored  # no row changes
    assert advisory_locks(db) == 0  # no lock held after
    run_for_real(db, ns, s["t0"], s["to"], s["invoice"])
    lines, charge_rows = rows_of(db, ns)
    assert comparable_lines(expected_after(lines_before, preview["lines"])) == lines
    assert comparable_charges(expected_after(charges_before, preview["charges"])) == charge_rows
    assert all(step["at"] <= preview["to"] for step in preview["steps"])


def without_ids(patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in p.items() if k not in ("line_id", "invoice_id", "group_id", "charge_id")} for p in patches
    ]


@SETTINGS
@given(scenarios(), st.integers(1, 60), st.booleans())
def test_apply_dry_run_then_apply_and_sync_gives_the_previewed_patches(
    db: Engine, s: dict[str, Any], cut: int, reprice: bool
) -> None:
    ns = unique("dryrun")
    doc = build(ns, s)
    apply(db, doc)
    sync_subscription(db, ns, "sub_1", as_of=s["t0"], now=s["t0"])
    changed = build(ns, s)
    changed["active_to"] = (s["start"] + timedelta(days=cut)).isoformat()  # a cancellation
    if reprice:
        for versions in changed["phases"][0]["items"].values():
            price = versions[0]["rate_card"]["price"]
            if price["type"] == "flat":
                price["amount"] = str(Decimal(price["amount"]) + 7)
    stored = dump(db)
    now = s["t0"] + timedelta(days=1)

    _, dry = dry_run_apply(db, validate_document(changed), now=now)

    assert dump(db) == stored and advisory_locks(db) == 0
    apply(db, changed)
    real = sync_subscription(db, ns, "sub_1", as_of=now, now=now)
    assert without_ids([patch_json(p) for p in dry.patches]) == without_ids([patch_json(p) for p in real.patches])


def test_preview_of_a_document_not_yet_applied_writes_nothing(db: Engine) -> None:
    ns = unique("preview-doc")
    doc = document(ns, {"fee": [item_version("2024-01-01T00:00:00Z", None, rate_card("Fee", flat("30")))]})
    apply(db, {**doc, "id": "other", "phases": [{**doc["phases"][0], "id": "other-default"}]})  # the customer exists
    stored = dump(db)
    preview = preview_document(db, validate_document(doc), start=t("2024-01-01"), to=t("2024-03-15"))
    assert dump(db) == stored and advisory_locks(db) == 0
    created = [line for line in preview["lines"] if line["change"] == "created"]
    assert [line["unique_reference_id"] for line in created] == [
        f"sub_1/default/fee/v[0]/period[{n}]" for n in range(4)
    ]
    # the last sync, a second after March 1, reaches the horizon April 1 (docs/sync.md §3.2)
    assert [(m["month"], m["total"]) for m in preview["months"]] == [
        ("2024-01", "30"),
        ("2024-02", "30"),
        ("2024-03", "30"),
        ("2024-04", "30"),
    ]
