"""Writing, reading and soft-deleting subscription documents against real Postgres."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tests.builders import contract_example, printed_example, two_phase_document, version
from worker.contract.document_json import to_document
from worker.contract.documents import validate_document
from worker.errors import ConflictError, NotFoundError
from worker.store.customers import get_customer, upsert_customer
from worker.store.subscriptions import apply_subscription, delete_subscription, get_subscription
from worker.store.tables import subscription_items, subscription_phases, subscriptions


def add_customer(db: Engine, namespace: str = "acme", customer_id: str = "cust_01") -> None:
    with db.begin() as conn:
        upsert_customer(conn, namespace, customer_id, name="Customer")


def apply(db: Engine, document: dict[str, Any]) -> dict[str, Any]:
    with db.begin() as conn:
        stored = apply_subscription(conn, validate_document(document))
    return to_document(stored.document)


def get(db: Engine, namespace: str, subscription_id: str) -> dict[str, Any] | None:
    with db.connect() as conn:
        stored = get_subscription(conn, namespace, subscription_id)
    return None if stored is None else to_document(stored.document)


def row_counts(db: Engine) -> tuple[int, int, int]:
    with db.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(subscriptions)).scalar_one(),
            conn.execute(select(func.count()).select_from(subscription_phases)).scalar_one(),
            conn.execute(select(func.count()).select_from(subscription_items)).scalar_one(),
        )


def without_ids(document: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(document)
    clean.pop("id", None)
    for phase in clean["phases"]:
        phase.pop("id", None)
        for versions in phase["items"].values():
            for item in versions:
                item.pop("id", None)
    return clean


def test_contract_example_round_trips_exactly(db: Engine) -> None:
    add_customer(db)
    assert apply(db, contract_example()) == printed_example()
    assert get(db, "acme", "sub_01") == printed_example()


def test_round_trip_generates_ids_and_normalises_to_utc(db: Engine) -> None:
    add_customer(db)
    written = apply(db, two_phase_document())
    assert written["id"].startswith("sub_")
    stored = get(db, "acme", written["id"])
    assert stored == written
    # equal to the normalised input, up to the generated ids and defaults
    expected = to_document(validate_document(two_phase_document()))
    assert without_ids(stored) == without_ids(expected) | {"name": "Growth"}
    assert stored["billing_anchor"] == "2024-01-01T00:00:00Z"  # +02:00 input comes back as Z
    phase_ids = [phase["id"] for phase in stored["phases"]]
    assert all(pid.startswith("ph_") for pid in phase_ids) and len(set(phase_ids)) == 2
    item_ids = [i["id"] for phase in stored["phases"] for versions in phase["items"].values() for i in versions]
    assert all(iid.startswith("it_") for iid in item_ids) and len(set(item_ids)) == 5


def test_reapplying_without_ids_keeps_ids_stable(db: Engine) -> None:
    add_customer(db)
    first = apply(db, two_phase_document() | {"id": "sub_stable"})
    second = apply(db, two_phase_document() | {"id": "sub_stable"})
    assert second == first
    assert row_counts(db) == (1, 2, 5)


def test_applying_again_replaces_and_removed_versions_vanish(db: Engine) -> None:
    add_customer(db)
    document = two_phase_document() | {"id": "sub_r"}
    first = apply(db, document)
    changed = copy.deepcopy(document)
    paid = changed["phases"][1]
    paid["items"]["platform-fee"] = paid["items"]["platform-fee"][:1]  # drop versions 1 and 2
    del paid["items"]["api-calls"]
    paid["items"]["support"] = [version("2024-02-01T00:00:00Z")]
    changed["phases"] = [paid]  # drop the trial phase
    changed["active_from"] = paid["active_from"]  # no instant without a phase (docs/contract.md §3 structure)
    changed["name"] = "Renamed"  # the currency and customer never change (docs/contract.md §3 limits)
    second = apply(db, changed)

    assert second["name"] == "Renamed"
    assert [phase["key"] for phase in second["phases"]] == ["paid"]
    assert set(second["phases"][0]["items"]) == {"platform-fee", "support"}
    assert len(second["phases"][0]["items"]["platform-fee"]) == 1
    # surviving rows keep their ids
    assert second["phases"][0]["id"] == first["phases"][1]["id"]
    kept = second["phases"][0]["items"]["platform-fee"][0]["id"]
    assert kept == first["phases"][1]["items"]["platform-fee"][0]["id"]
    assert row_counts(db) == (1, 1, 2)
    assert get(db, "acme", "sub_r") == second


def test_explicit_ids_move_items_between_phases(db: Engine) -> None:
    add_customer(db)
    document = contract_example()
    apply(db, document)
    moved = contract_example()
    moved["phases"][0].update(key="renamed", id="ph_02")  # ph_01 disappears, it_01 moves to ph_02
    result = apply(db, moved)
    assert result["phases"][0]["id"] == "ph_02"
    assert result["phases"][0]["items"]["platform-fee"][0]["id"] == "it_01"
    assert row_counts(db) == (1, 1, 1)


def test_missing_customer_is_refused_and_nothing_is_written(db: Engine) -> None:
    with pytest.raises(NotFoundError, match="customer 'cust_01' does not exist in namespace 'acme'"):
        apply(db, contract_example())
    assert row_counts(db) == (0, 0, 0)


def test_ids_of_another_subscription_are_refused_and_nothing_is_written(db: Engine) -> None:
    add_customer(db)
    apply(db, contract_example())
    other = contract_example() | {"id": "sub_02"}
    with pytest.raises(ConflictError, match="phase id 'ph_01' belongs to subscription 'sub_01'"):
        apply(db, other)
    other["phases"][0]["id"] = "ph_02"
    with pytest.raises(ConflictError, match="item id 'it_01' belongs to subscription 'sub_01'"):
        apply(db, other)
    assert row_counts(db) == (1, 1, 1)
    assert get(db, "acme", "sub_01") == printed_example()


def test_delete_is_soft_and_reapply_restores(db: Engine) -> None:
    add_customer(db)
    apply(db, contract_example())
    at = datetime(2024, 5, 1, tzinfo=UTC)
    with db.begin() as conn:
        assert delete_subscription(conn, "acme", "sub_01", at) == at
    with db.connect() as conn:
        stored = get_subscription(conn, "acme", "sub_01")
    assert stored is not None and stored.deleted_at == at
    assert to_document(stored.document) == printed_example()
    with db.begin() as conn:
        now = conn.execute(select(func.now())).scalar_one()
        assert delete_subscription(conn, "acme", "sub_01") == now
    apply(db, contract_example())
    with db.connect() as conn:
        restored = get_subscription(conn, "acme", "sub_01")
    assert restored is not None and restored.deleted_at is None


def test_delete_and_get_of_unknown_subscription(db: Engine) -> None:
    with db.begin() as conn, pytest.raises(NotFoundError):
        delete_subscription(conn, "acme", "nope")
    assert get(db, "acme", "nope") is None


def test_namespaces_do_not_interfere(db: Engine) -> None:
    add_customer(db, "acme")
    add_customer(db, "globex")
    acme = printed_example()
    globex = printed_example() | {"namespace": "globex", "currency": "EUR"}
    apply(db, acme)
    apply(db, globex)
    assert get(db, "acme", "sub_01") == acme
    assert get(db, "globex", "sub_01") == globex

    # replacing in one namespace (dropping every item) leaves the other untouched
    apply(db, contract_example() | {"phases": [{"key": "empty", "active_from": "2024-01-01T00:00:00Z"}]})
    assert get(db, "globex", "sub_01") == globex
    with db.begin() as conn:
        delete_subscription(conn, "globex", "sub_01")
    with db.connect() as conn:
        acme_stored = get_subscription(conn, "acme", "sub_01")
    assert acme_stored is not None and acme_stored.deleted_at is None
    assert row_counts(db) == (2, 2, 1)


def test_customer_upsert_keeps_name_and_writes_deleted_at(db: Engine) -> None:
    deleted = datetime(2024, 3, 1, tzinfo=UTC)
    with db.begin() as conn:
        created = upsert_customer(conn, "acme", "c1")
        assert created.name == "c1"
        upsert_customer(conn, "acme", "c1", name="Named")
        updated = upsert_customer(conn, "acme", "c1", deleted_at=deleted)
    assert updated.name == "Named" and updated.deleted_at == deleted
    with db.connect() as conn:
        assert get_customer(conn, "globex", "c1") is None


def test_large_document_is_written_in_chunks(db: Engine) -> None:
    add_customer(db)
    document = contract_example()
    document["phases"][0]["items"] = {
        f"item-{i}": [version("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"), version("2024-02-01T00:00:00Z")]
        for i in range(1250)
    }
    written = apply(db, document)
    assert row_counts(db) == (1, 1, 2500)
    assert get(db, "acme", "sub_01") == written
    document["phases"][0]["items"] = {"only": [version("2024-01-01T00:00:00Z")]}
    apply(db, document)
    assert row_counts(db) == (1, 1, 1)
