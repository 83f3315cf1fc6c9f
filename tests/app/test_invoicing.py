"""Invoicing pending lines and progressive billing (docs/sync.md §9), then sync against the result (§5.4)."""

from __future__ import annotations

from sqlalchemy import Engine, select

from tests.builders import flat, item, phase, seed_subscription, set_subscription_end, t, unit
from worker.app.invoicing import invoice_pending_lines
from worker.app.sync import sync_subscription
from worker.store.invoices import set_invoice_status
from worker.store.tables import invoice_lines, invoice_validation_issues, invoices, split_line_groups


def all_lines(db: Engine) -> dict[str, dict]:
    with db.connect() as conn:
        return {r.id: r._asdict() for r in conn.execute(select(invoice_lines))}


def groups(db: Engine) -> dict[str, dict]:
    with db.connect() as conn:
        return {r.id: r._asdict() for r in conn.execute(select(split_line_groups))}


def invoice(db: Engine, invoice_id: str) -> dict:
    with db.connect() as conn:
        return conn.execute(select(invoices).where(invoices.c.id == invoice_id)).one()._asdict()


def test_in_advance_fees_due_now_move_to_a_draft_invoice(db: Engine) -> None:
    seed_subscription(
        db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01"), item("api", unit("1"), "2024-01-01"))
    )
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-10"))
    (created,) = invoice_pending_lines(db, "acme", "cust_01", as_of=t("2024-01-10"))
    moved = {line_id: all_lines(db)[line_id] for line_id in created.line_ids}
    assert [m["unique_reference_id"] for m in moved.values()] == ["sub_01/default/fee/v[0]/period[0]"]
    inv = invoice(db, created.id)
    assert (inv["type"], inv["status"], inv["immutable"]) == ("standard", "draft", False)
    # nothing else is due: an empty result, nothing written
    assert invoice_pending_lines(db, "acme", "cust_01", as_of=t("2024-01-10")) == []
    # re-sync leaves the invoiced line alone (identity unchanged, still subscription-managed)
    assert sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-10")).patches == ()


def progressive_setup(db: Engine) -> tuple[str, str, str, str]:
    seed_subscription(db, phase("default", "2024-01-01", item("api", unit("5"), "2024-01-01")))
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-01T00:01"))
    (line_l,) = all_lines(db).values()
    (created,) = invoice_pending_lines(db, "acme", "cust_01", as_of=t("2024-01-02"), progressive=True)
    lines = all_lines(db)
    (group_id,) = groups(db)
    lines[line_l["id"]]
    (l2_id,) = [i for i in lines if i != line_l["id"]]
    return line_l["id"], l2_id, group_id, created.id


def test_progressive_billing_splits_a_usage_line_into_a_group(db: Engine) -> None:
    l_id, l2_id, group_id, draft_id = progressive_setup(db)
    lines, group = all_lines(db), groups(db)[group_id]
    assert group["unique_reference_id"] == "sub_01/default/api/v[0]/period[0]"
    assert (group["service_period_start"], group["service_period_end"]) == (t("2024-01-01"), t("2024-02-01"))
    pre, post = lines[l_id], lines[l2_id]
    assert (pre["service_period_start"], pre["service_period_end"], pre["invoice_at"]) == (
        t("2024-01-01"),
        t("2024-01-02"),
        t("2024-01-02"),
    )
    assert (
        pre["invoice_id"] == draft_id and pre["unique_reference_id"] is None and pre["split_line_group_id"] == group_id
    )
    assert (post["service_period_start"], post["service_period_end"], post["invoice_at"]) == (
        t("2024-01-02"),
        t("2024-02-01"),
        t("2024-02-01"),
    )
    assert post["unique_reference_id"] is None and post["split_line_group_id"] == group_id
    assert invoice(db, post["invoice_id"])["type"] == "gathering"
    # a re-sync finds the hierarchy item and changes nothing
    assert sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-02")).patches == ()


def test_cancel_after_the_split_shrinks_last_child_and_group(db: Engine) -> None:
    l_id, l2_id, group_id, _ = progressive_setup(db)
    set_subscription_end(db, "2024-01-15")
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-15"))
    assert [(p.op, p.line_id or p.group_id) for p in result.patches] == [
        ("line_update", l2_id),
        ("group_update", group_id),
    ]
    lines = all_lines(db)
    assert (lines[l2_id]["service_period_end"], lines[l2_id]["invoice_at"]) == (t("2024-01-15"), t("2024-01-15"))
    assert lines[l_id]["service_period_end"] == t("2024-01-02")
    assert groups(db)[group_id]["service_period_end"] == t("2024-01-15")


def test_cancel_exactly_at_the_split_deletes_the_emptied_child_and_the_gathering_invoice(db: Engine) -> None:
    _l_id, l2_id, group_id, _ = progressive_setup(db)
    gathering = all_lines(db)[l2_id]["invoice_id"]
    set_subscription_end(db, "2024-01-02T00:00:00.010")
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-02T00:00:00.010"))
    assert [p.op for p in result.patches] == ["line_delete", "group_update"]
    assert all_lines(db)[l2_id]["deleted_at"] is not None
    assert groups(db)[group_id]["service_period_end"] == t("2024-01-02")
    assert invoice(db, gathering)["deleted_at"] is not None


def test_cancel_before_the_split_on_draft_then_on_issued(db: Engine) -> None:
    l_id, _l2_id, _group_id, _draft_id = progressive_setup(db)
    set_subscription_end(db, "2024-01-01T12:00")
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-01T12:00"))
    assert [p.op for p in result.patches] == ["line_update", "line_delete", "group_update"]
    lines = all_lines(db)
    assert lines[l_id]["service_period_end"] == t("2024-01-01T12:00")
    assert lines[l_id]["invoice_at"] == t("2024-01-02")  # draft: invoice_at kept


def test_cancel_before_the_split_when_the_invoice_is_issued_raises_an_issue_once(db: Engine) -> None:
    l_id, _l2_id, _group_id, draft_id = progressive_setup(db)
    with db.begin() as conn:
        set_invoice_status(conn, "acme", draft_id, "issued", t("2024-01-03"))
    set_subscription_end(db, "2024-01-01T12:00")
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-01T12:00"))
    assert [p.op for p in result.patches] == ["validation_issue", "line_delete", "group_update"]
    assert all_lines(db)[l_id]["service_period_end"] == t("2024-01-02")  # immutable: unchanged
    with db.connect() as conn:
        (issue,) = conn.execute(select(invoice_validation_issues)).all()
    assert issue.message == (
        "usage based line's service period cannot be changed on immutable invoice "
        "(new period: 2024-01-01T00:00:00Z - 2024-01-01T12:00:00Z)"
    )
    assert sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-01T12:00")).patches == ()


def test_continue_after_cancel_extends_and_resurrects_the_deleted_child(db: Engine) -> None:
    _l_id, l2_id, group_id, _ = progressive_setup(db)
    set_subscription_end(db, "2024-01-02T00:00:00.010")
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-02T00:00:00.010"))
    set_subscription_end(db, None)
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-03"))
    (update,) = [p for p in result.patches if p.op == "line_update"]
    assert update.line_id == l2_id
    revived = all_lines(db)[l2_id]
    assert revived["deleted_at"] is None and revived["service_period_end"] == t("2024-02-01")
    assert groups(db)[group_id]["service_period_end"] == t("2024-02-01")
    # its gathering invoice was deleted when the cancellation emptied it: the revived child moves to a
    # live gathering invoice, so that invoicing still finds it
    live = invoice(db, revived["invoice_id"])
    assert (live["type"], live["deleted_at"]) == ("gathering", None) and update.invoice_id == live["id"]
    (created,) = invoice_pending_lines(db, "acme", "cust_01", as_of=t("2024-02-01"))
    assert l2_id in created.line_ids
    assert sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-03")).patches == ()
