"""docs/sync.md §5 and §6.3-§6.5 rule by rule, on the pure planner and invoice updater."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.domain.builders import (
    DRAFT,
    GATHERING,
    ISSUED,
    flat,
    item,
    line_from,
    lines_by_id,
    p,
    phase,
    state,
    sub,
    t,
    target,
    unit,
)
from worker.domain.errors import DuplicateIdentityError, PlanningError
from worker.domain.persisted import IGNORE, PersistedGroup
from worker.domain.planner import DeleteLine, UpdateGroup, UpdateLine, plan
from worker.domain.prices import FlatPrice
from worker.domain.target import TargetLine
from worker.domain.updater import resolve


def new_ids():  # type: ignore[no-untyped-def]
    counter = iter(range(10_000))
    return lambda: f"new_{next(counter)}"


def usage_view(end: str | None = None):  # type: ignore[no-untyped-def]
    return sub(phase("default", "2024-01-01", item("api", unit("1"), "2024-01-01")), end=end)


def flat_view(end: str | None = None, amount: str = "10"):  # type: ignore[no-untyped-def]
    return sub(phase("default", "2024-01-01", item("fee", flat(amount), "2024-01-01")), end=end)


def only(view, as_of: str) -> TargetLine:  # type: ignore[no-untyped-def]
    """The target's period[0] line."""
    return next(line for line in target(view, as_of).lines if line.identity.endswith("/period[0]"))


API = "sub_01/default/api/v[0]/period[0]"


# --- deletes -------------------------------------------------------------------------------
def test_removed_line_with_ignore_annotation_is_kept() -> None:
    line = line_from(only(usage_view(), "2024-01-10"), annotations={IGNORE: True})
    assert plan((), state(line)).is_empty


def test_removed_manually_edited_line_is_still_deleted() -> None:
    line = line_from(only(usage_view(), "2024-01-10"), managed_by="manual")
    (patch,) = plan((), state(line)).patches
    assert isinstance(patch, DeleteLine) and patch.line.id == line.id


def test_manually_deleted_line_is_never_recreated_nor_deleted_again() -> None:
    tl = only(usage_view(), "2024-01-10")
    line = line_from(tl, managed_by="manual", deleted=True)
    assert plan((tl,), state(line)).is_empty
    assert plan((), state(line)).is_empty


# --- line diff -----------------------------------------------------------------------------
def test_usage_line_whose_start_alone_changed_gets_no_patch() -> None:
    tl = only(usage_view(), "2024-01-10")
    line = line_from(tl, service_period=p("2023-12-25", "2024-02-01"))
    assert plan((tl,), state(line)).is_empty


def test_usage_shrink_sets_whole_period_and_invoice_at_only_on_gathering() -> None:
    tl = only(usage_view("2024-01-20"), "2024-01-20")
    old = only(usage_view(), "2024-01-10")
    for invoice, expected_invoice_at in ((GATHERING, t("2024-01-20")), (DRAFT, t("2024-02-01"))):
        line = line_from(old, invoice=invoice)
        (patch,) = plan((tl,), state(line)).patches
        assert isinstance(patch, UpdateLine) and patch.reason == "shrink"
        assert patch.service_period == p("2024-01-01", "2024-01-20") and patch.invoice_at == expected_invoice_at


def test_skip_rules_for_updates() -> None:
    tl = only(usage_view("2024-01-20"), "2024-01-20")
    old = only(usage_view(), "2024-01-10")
    assert plan((tl,), state(line_from(old, managed_by="manual"))).is_empty
    assert plan((tl,), state(line_from(old, managed_by="system"))).is_empty
    assert plan((tl,), state(line_from(old, annotations={IGNORE: True}))).is_empty


def test_usage_update_against_a_flat_line_is_an_error() -> None:
    tl = only(usage_view("2024-01-20"), "2024-01-20")
    old = only(usage_view(), "2024-01-10")
    line = line_from(old, price=FlatPrice(Decimal(1)))
    with pytest.raises(PlanningError, match="flat fee line cannot take a usage update"):
        plan((tl,), state(line))


def test_flat_target_against_usage_line_takes_a_usage_update() -> None:
    tl = only(flat_view("2024-01-20"), "2024-01-20")
    line = line_from(tl, price=unit("1"), service_period=p("2024-01-01", "2024-02-01"))
    (patch,) = plan((tl,), state(line)).patches
    assert isinstance(patch, UpdateLine) and patch.reason == "shrink"


def test_prorate_changes_amount_and_period_together_and_keeps_payment_term() -> None:
    tl = next(
        x
        for x in target(
            sub(phase("default", "2024-01-01", item("fee", flat("10"), "2024-01-01", "2024-01-11"))), "2024-01-05"
        ).lines
    )
    old = line_from(tl, service_period=p("2024-01-01", "2024-02-01"), price=FlatPrice(Decimal(10), "in_advance"))
    (patch,) = plan((tl,), state(old)).patches
    assert isinstance(patch, UpdateLine) and patch.reason == "prorate"
    assert patch.service_period == p("2024-01-01", "2024-01-11")
    assert patch.price == FlatPrice(Decimal("3.23"), "in_advance")


def test_amount_only_change_keeps_invoice_at() -> None:
    tl = only(flat_view(amount="12"), "2024-01-10")
    old = line_from(tl, price=FlatPrice(Decimal(10)), invoice_at=t("2023-12-31"))
    (patch,) = plan((tl,), state(old)).patches
    assert isinstance(patch, UpdateLine) and patch.invoice_at == t("2023-12-31")


def test_duplicate_persisted_identity_is_an_error() -> None:
    tl = only(usage_view(), "2024-01-10")
    with pytest.raises(DuplicateIdentityError):
        state(line_from(tl), line_from(tl))


# --- immutable invoices ---------------------------------------------------------------------
def test_issues_on_immutable_invoices_and_their_de_duplication() -> None:
    tl = only(flat_view(amount="12"), "2024-01-10")
    old = line_from(tl, price=FlatPrice(Decimal(10)), invoice=ISSUED)
    persisted = state(old)
    changes = resolve(plan((tl,), persisted), persisted, gathering_invoice_id=None, new_id=new_ids())
    (issue,) = changes.issues
    assert (
        issue.message
        == "flat fee line's per unit amount cannot be changed on immutable invoice (new per unit amount: 12)"
    )
    assert changes.line_writes == [] and [x.op for x in changes.patches] == ["validation_issue"]
    seen = state(old).__class__(persisted.items, persisted.invoices, frozenset({issue.key}))
    again = resolve(plan((tl,), seen), seen, gathering_invoice_id=None, new_id=new_ids())
    assert again.issues == [] and again.patches == []


def test_delete_on_immutable_invoice_is_a_warning() -> None:
    line = line_from(only(usage_view(), "2024-01-10"), invoice=ISSUED)
    persisted = state(line)
    changes = resolve(plan((), persisted), persisted, gathering_invoice_id=None, new_id=new_ids())
    assert [(i.severity, i.message, i.path) for i in changes.issues] == [
        ("warning", "line should be deleted, but the invoice is immutable", f"lines/{line.id}")
    ]
    assert changes.line_deletes == []


# --- hierarchies ----------------------------------------------------------------------------
def hierarchy(children, g=("2024-01-01", "2024-02-01")):  # type: ignore[no-untyped-def]
    group = PersistedGroup("G", API, p(*g), tuple(children))
    return state(groups=(group,))


def child(id: str, a: str, b: str, invoice=GATHERING, **kw):  # type: ignore[no-untyped-def]
    tl = only(usage_view(), "2024-01-10")
    return line_from(
        tl, id=id, invoice=invoice, unique_reference_id=None, split_line_group_id="G", service_period=p(a, b), **kw
    )


def test_flat_target_against_a_group_is_an_error() -> None:
    tl = only(sub(phase("default", "2024-01-01", item("api", flat("1"), "2024-01-01"))), "2024-01-10")
    with pytest.raises(PlanningError, match="split line group"):
        plan((tl,), hierarchy([child("a", "2024-01-01", "2024-02-01")]))


def test_ignored_group_is_neither_deleted_nor_updated() -> None:
    persisted = hierarchy(
        [
            child("a", "2024-01-01", "2024-01-05"),
            child("b", "2024-01-05", "2024-02-01", deleted=True, annotations={IGNORE: True}),
        ]
    )
    assert plan((), persisted).is_empty
    assert plan((only(usage_view("2024-01-20"), "2024-01-20"),), persisted).is_empty


def test_group_delete_deletes_live_children_then_the_group() -> None:
    persisted = hierarchy(
        [child("a", "2024-01-01", "2024-01-05", invoice=DRAFT), child("b", "2024-01-05", "2024-02-01")]
    )
    patches = plan((), persisted).patches
    assert [(type(x).__name__, getattr(x, "line", None) and x.line.id) for x in patches] == [
        ("DeleteLine", "a"),
        ("DeleteLine", "b"),
        ("DeleteGroup", None),
    ]
    changes = resolve(plan((), persisted), persisted, gathering_invoice_id=None, new_id=new_ids())
    assert changes.group_deletes == ["G"] and changes.touched_invoices == {"inv_d", "inv_g"}


def test_group_with_an_immutable_child_is_kept_and_the_sync_succeeds() -> None:
    persisted = hierarchy(
        [child("a", "2024-01-01", "2024-01-05", invoice=ISSUED), child("b", "2024-01-05", "2024-02-01")]
    )
    changes = resolve(plan((), persisted), persisted, gathering_invoice_id=None, new_id=new_ids())
    assert changes.group_deletes == [] and changes.line_deletes == ["b"]
    assert [x.op for x in changes.patches] == ["validation_issue", "line_delete"]


def test_shrink_deletes_deleted_child_on_immutable_invoice_as_critical_issue() -> None:
    persisted = hierarchy(
        [child("a", "2024-01-01", "2024-01-05"), child("b", "2024-01-25", "2024-02-01", invoice=ISSUED, deleted=True)]
    )
    tl = only(usage_view("2024-01-20"), "2024-01-20")
    changes = resolve(plan((tl,), persisted), persisted, gathering_invoice_id=None, new_id=new_ids())
    assert [(i.severity, i.path) for i in changes.issues] == [("critical", "lines/nil")]


def test_update_of_a_deleted_child_on_an_immutable_invoice_aborts() -> None:
    persisted = hierarchy(
        [child("a", "2024-01-01", "2024-01-25", invoice=ISSUED, deleted=True)], g=("2024-01-01", "2024-01-25")
    )
    with pytest.raises(PlanningError, match="not among the lines"):
        resolve(
            plan((only(usage_view(), "2024-01-10"),), persisted), persisted, gathering_invoice_id=None, new_id=new_ids()
        )


def test_extend_picks_the_last_child_with_tie_breaks() -> None:
    persisted = hierarchy(
        [
            child("a", "2024-01-01", "2024-01-10"),
            child("z", "2024-01-05", "2024-01-10", deleted=True),
            child("b", "2024-01-05", "2024-01-10"),
        ],
        g=("2024-01-01", "2024-01-10"),
    )
    patches = plan((only(usage_view(), "2024-01-09"),), persisted).patches
    update, group = patches
    assert isinstance(update, UpdateLine) and update.line.id == "b" and update.reason == "extend"
    assert update.service_period == p("2024-01-05", "2024-02-01") and not update.resurrects
    assert isinstance(group, UpdateGroup) and group.service_period == p("2024-01-01", "2024-02-01")


def test_extend_of_manual_deleted_child_moves_it_but_does_not_resurrect() -> None:
    persisted = hierarchy(
        [child("a", "2024-01-01", "2024-01-10", deleted=True, managed_by="manual")], g=("2024-01-01", "2024-01-10")
    )
    update, _ = plan((only(usage_view(), "2024-01-09"),), persisted).patches
    assert isinstance(update, UpdateLine) and not update.resurrects
    changes = resolve(
        plan((only(usage_view(), "2024-01-09"),), persisted), persisted, gathering_invoice_id=None, new_id=new_ids()
    )
    assert changes.line_writes[0].resurrect is False


def test_creation_fails_after_customer_deletion_and_without_feature_key() -> None:
    tl = only(usage_view(), "2024-01-10")
    persisted = state()
    with pytest.raises(PlanningError, match="after the customer was deleted"):
        resolve(
            plan((tl,), persisted),
            persisted,
            gathering_invoice_id="g",
            new_id=new_ids(),
            customer_deleted_at=t("2024-01-15"),
        )
    from dataclasses import replace

    with pytest.raises(PlanningError, match="feature_key"):
        resolve(
            plan((replace(tl, feature_key=None),), persisted), persisted, gathering_invoice_id="g", new_id=new_ids()
        )


def test_customer_deletion_caps_the_target() -> None:
    lines = lines_by_id(target(flat_view(), "2024-03-10", customer_deleted_at="2024-02-10"))
    assert list(lines) == ["default/fee/v[0]/period[0]", "default/fee/v[0]/period[1]"]
    capped = lines["default/fee/v[0]/period[1]"]
    assert capped.service_period == p("2024-02-01", "2024-02-10")
    assert capped.price == FlatPrice(Decimal("10"))  # ends at the (capped) subscription end: not prorated


def test_revived_child_on_a_deleted_gathering_invoice_moves_to_the_live_one() -> None:
    from worker.domain.persisted import Invoice
    from worker.domain.updater import needs_gathering_invoice

    gone = Invoice("inv_gone", "gathering", "gathering", False, True)
    persisted = hierarchy(
        [
            child("a", "2024-01-01", "2024-01-05", invoice=DRAFT),
            child("b", "2024-01-05", "2024-01-10", invoice=gone, deleted=True),
        ],
        g=("2024-01-01", "2024-01-10"),
    )
    persisted = type(persisted)(persisted.items, {**persisted.invoices, "inv_gone": gone}, persisted.existing_issues)
    the_plan = plan((only(usage_view(), "2024-01-09"),), persisted)
    assert needs_gathering_invoice(the_plan, persisted)
    changes = resolve(the_plan, persisted, gathering_invoice_id="inv_live", new_id=new_ids())
    (write,) = changes.line_writes
    assert write.line_id == "b" and write.resurrect and write.move_to_invoice_id == "inv_live"
    assert changes.patches[0].invoice_id == "inv_live"
