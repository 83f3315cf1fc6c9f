"""The sync use case against real Postgres: docs/sync.md §4-§8 end to end."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, event, insert, select, update

from tests.builders import (
    flat,
    item,
    move_lines_to_new_invoice,
    phase,
    seed_subscription,
    set_subscription_end,
    t,
    unit,
)
from worker.app.sync import sync_subscription
from worker.domain.errors import DuplicateIdentityError
from worker.errors import MissingInvoiceError, NotFoundError
from worker.store import apply as apply_module
from worker.store import write as write_module
from worker.store.tables import (
    invoice_lines,
    invoice_validation_issues,
    invoices,
    subscription_sync_states,
    subscriptions,
)


def lines(engine: Engine, include_deleted: bool = False, namespace: str = "acme") -> dict[str, dict]:
    with engine.connect() as conn:
        q = select(invoice_lines).where(invoice_lines.c.namespace == namespace)
        if not include_deleted:
            q = q.where(invoice_lines.c.deleted_at.is_(None))
        return {r.unique_reference_id or r.id: r._asdict() for r in conn.execute(q)}


def invoice_rows(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.id: r._asdict() for r in conn.execute(select(invoices))}


def table_snapshot(engine: Engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {
            tbl.name: sorted(map(tuple, conn.execute(select(tbl)).all()), key=repr)
            for tbl in (invoice_lines, invoices, invoice_validation_issues, subscription_sync_states)
        }


def seed_12_1(db: Engine) -> None:
    seed_subscription(
        db,
        phase("default", "2024-01-15", item("platform-fee", flat("100"), "2024-01-15")),
        start="2024-01-15",
        anchor="2024-01-01",
    )


def test_first_sync_creates_lines_on_a_gathering_invoice_and_records_state(db: Engine) -> None:
    seed_12_1(db)
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-15"), now=t("2024-01-15T00:00:05"))
    assert [(p.op, p.unique_reference_id) for p in result.patches] == [
        ("line_create", "sub_01/default/platform-fee/v[0]/period[0]")
    ]
    (line,) = lines(db).values()
    assert line["price"] == {"type": "flat", "amount": "54.84", "payment_term": "in_advance"}
    assert line["managed_by"] == "subscription"
    assert line["service_period_start"] == t("2024-01-15") and line["service_period_end"] == t("2024-02-01")
    (inv,) = invoice_rows(db).values()
    assert (inv["type"], inv["status"], inv["immutable"]) == ("gathering", "gathering", False)
    assert line["invoice_id"] == inv["id"] == result.patches[0].invoice_id
    with db.connect() as conn:
        state = conn.execute(select(subscription_sync_states)).one()
    assert state.has_billables is True and state.next_sync_after == t("2024-01-15")


def test_second_sync_writes_nothing(db: Engine) -> None:
    seed_subscription(
        db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01"), item("api", unit("1"), "2024-01-01"))
    )
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-06-10"), now=t("2024-06-10"))
    before = table_snapshot(db)
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-06-10"), now=t("2024-06-10"))
    assert result.patches == ()
    after = table_snapshot(db)
    assert {k: v for k, v in after.items() if k != "subscription_sync_states"} == {
        k: v for k, v in before.items() if k != "subscription_sync_states"
    }


def test_cancellation_on_issued_invoice_raises_one_deduplicated_issue(db: Engine) -> None:
    seed_subscription(
        db,
        phase("default", "2024-01-01", item("seats", flat("30"), "2024-01-01"), item("api", unit("0.1"), "2024-01-01")),
    )
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-10"))
    seats0 = lines(db)["sub_01/default/seats/v[0]/period[0]"]
    issued = move_lines_to_new_invoice(db, [seats0["id"]], "issued")
    set_subscription_end(db, "2024-01-20")
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-20"))
    assert [p.op for p in result.patches] == ["line_delete", "line_update", "validation_issue"]
    after = lines(db)
    assert after["sub_01/default/seats/v[0]/period[0]"]["service_period_end"] == t("2024-02-01")  # unchanged
    assert after["sub_01/default/api/v[0]/period[0]"]["service_period_end"] == t("2024-01-20")
    assert after["sub_01/default/api/v[0]/period[0]"]["invoice_at"] == t("2024-01-20")
    assert "sub_01/default/seats/v[0]/period[1]" not in after
    with db.connect() as conn:
        issues = conn.execute(select(invoice_validation_issues)).all()
    assert [(i.invoice_id, i.severity, i.code, i.component, i.message, i.path) for i in issues] == [
        (
            issued,
            "warning",
            "immutable_invoice_handling_not_supported",
            "subscription-sync",
            "flat fee line's service period cannot be changed on immutable invoice",
            f"lines/{seats0['id']}",
        )
    ]
    again = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-20"))
    assert again.patches == ()
    with db.connect() as conn:
        assert len(conn.execute(select(invoice_validation_issues)).all()) == 1


def test_draft_invoice_left_without_lines_is_deleted(db: Engine) -> None:
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")))
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-10"))
    period1 = lines(db)["sub_01/default/fee/v[0]/period[1]"]
    draft = move_lines_to_new_invoice(db, [period1["id"]], "draft")
    set_subscription_end(db, "2024-01-20")
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-20"))
    assert ("line_delete", "sub_01/default/fee/v[0]/period[1]") in [
        (p.op, p.unique_reference_id) for p in result.patches
    ]
    inv = invoice_rows(db)[draft]
    assert (inv["status"], inv["immutable"]) == ("deleted", True) and inv["deleted_at"] is not None


def test_deleted_subscription_deletes_its_lines_and_the_empty_gathering_invoice(db: Engine) -> None:
    seed_subscription(db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01")))
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-10"))
    with db.begin() as conn:
        conn.execute(update(subscriptions).values(deleted_at=t("2024-01-11")))
    result = sync_subscription(db, "acme", "sub_01", now=t("2024-01-12"))
    assert {p.op for p in result.patches} == {"line_delete"}
    assert lines(db) == {}
    (inv,) = invoice_rows(db).values()
    assert inv["deleted_at"] == t("2024-01-12")
    with db.connect() as conn:
        state = conn.execute(select(subscription_sync_states)).one()
    assert (state.has_billables, state.next_sync_after) == (False, None)


def test_dry_run_writes_nothing(db: Engine) -> None:
    seed_12_1(db)
    before = table_snapshot(db)
    result = sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-20"), dry_run=True)
    assert [p.op for p in result.patches] == ["line_create", "line_create"]
    assert result.patches[0].invoice_id is None
    assert table_snapshot(db) == before


def test_crash_between_patch_groups_rolls_back_everything(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_subscription(
        db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01"), item("api", unit("1"), "2024-01-01"))
    )
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-03-10"))
    set_subscription_end(db, "2024-02-15")
    before = table_snapshot(db)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected crash after the line updates")

    monkeypatch.setattr(apply_module, "_update_groups", boom)
    monkeypatch.setattr(apply_module, "delete_emptied_invoices", boom)
    monkeypatch.setattr(write_module, "delete_emptied_invoices", boom)  # docs/credits.md §3.7 step 4 runs it
    with pytest.raises(RuntimeError, match="injected"):
        sync_subscription(db, "acme", "sub_01", as_of=t("2024-02-15"))
    assert table_snapshot(db) == before


def test_missing_referenced_invoice_is_an_error_naming_it(db: Engine) -> None:
    seed_12_1(db)
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-15"))
    with db.begin() as conn:  # bypass the foreign key, as a broken restore or a manual edit might
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        conn.execute(update(invoice_lines).values(invoice_id="inv_gone"))
    with pytest.raises(MissingInvoiceError, match="inv_gone"):
        sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-15"))


def test_duplicate_identity_is_an_error_and_writes_nothing(db: Engine) -> None:
    seed_12_1(db)
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-15"))
    (line,) = lines(db).values()
    with db.begin() as conn:  # a manually deleted twin with the same identity
        conn.execute(
            insert(invoice_lines).values(
                {**line, "id": "il_twin", "managed_by": "manual", "deleted_at": t("2024-01-16")}
            )
        )
    before = table_snapshot(db)
    with pytest.raises(DuplicateIdentityError, match="platform-fee"):
        sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-20"))
    assert table_snapshot(db) == before


def test_namespaces_never_mix(db: Engine) -> None:
    for ns in ("acme", "other"):
        seed_subscription(
            db, phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01", id="same")), namespace=ns
        )
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-10"))
    assert lines(db, namespace="other") == {}
    sync_subscription(db, "other", "sub_01", as_of=t("2024-03-10"))
    assert len(lines(db, namespace="acme")) == 2 and len(lines(db, namespace="other")) == 4


def count_statements(db: Engine, fn) -> int:  # type: ignore[no-untyped-def]
    counter = {"n": 0}

    def on_execute(*args: object) -> None:
        counter["n"] += 1

    event.listen(db, "before_cursor_execute", on_execute)
    try:
        fn()
    finally:
        event.remove(db, "before_cursor_execute", on_execute)
    return counter["n"]


def sync_statements(db: Engine, months: int, namespace: str) -> tuple[int, int, int, int]:
    seed_subscription(
        db,
        phase("default", "2000-01-01", item("fee", flat("10"), "2000-01-01"), item("api", unit("1"), "2000-01-01")),
        start="2000-01-01",
        namespace=namespace,
    )
    as_of = t(f"{2000 + months // 12}-{months % 12 + 1:02d}-15")
    first = count_statements(db, lambda: sync_subscription(db, namespace, "sub_01", as_of=as_of))
    steady = count_statements(db, lambda: sync_subscription(db, namespace, "sub_01", as_of=as_of))
    set_subscription_end(db, f"{2000 + months // 12}-{months % 12 + 1:02d}-10", namespace=namespace)
    edit = count_statements(db, lambda: sync_subscription(db, namespace, "sub_01", as_of=as_of))
    return len(lines(db, include_deleted=True, namespace=namespace)), first, steady, edit


def test_statement_count_does_not_grow_with_lines(db: Engine) -> None:
    small = sync_statements(db, 3, "small")
    large = sync_statements(db, 300, "large")
    print(f"\nlines, statements of first / steady / edit sync: {small} vs {large}")
    assert large[0] > 10 * small[0]  # really many more lines
    assert small[1:] == large[1:]
    assert large[2] <= 8 and large[1] <= 12 and large[3] <= 12


def test_a_sync_runs_with_the_collector_paused_and_leaves_it_running(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker.infra.gc_policy.collections_paused around the sync's transaction (docs/performance.md "The collector
    paused during a sync"), a failed sync included."""
    import gc

    import worker.app.sync as sync_module

    seen: list[bool] = []
    real_write = sync_module.write_plan

    def write_plan(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return real_write(*args, **kwargs)

    monkeypatch.setattr(sync_module, "write_plan", write_plan)
    seed_12_1(db)
    assert gc.isenabled()
    sync_subscription(db, "acme", "sub_01", as_of=t("2024-01-15"))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(NotFoundError):
        sync_subscription(db, "acme", "sub_missing", as_of=t("2024-01-15"))
    assert gc.isenabled()
