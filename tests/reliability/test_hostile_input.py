"""Poison and hostile subscription documents: always a clear refusal naming the field, never a crash,
never a partial write; and a valid document whose timeline is extreme still syncs in bounded time."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from tests.builders import contract_example
from worker.cli import app
from worker.contract.documents import parse_document
from worker.contract.problems import DocumentError
from worker.store.tables import subscription_items, subscription_phases, subscriptions

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

PATHS = [
    ("id",),
    ("namespace",),
    ("currency",),
    ("billing_cadence",),
    ("billing_anchor",),
    ("active_from",),
    ("active_to",),
    ("pro_rating",),
    ("phases",),
    ("phases", 0, "key"),
    ("phases", 0, "active_from"),
    ("phases", 0, "items"),
    ("phases", 0, "items", "platform-fee", 0, "rate_card", "price"),
    ("phases", 0, "items", "platform-fee", 0, "rate_card", "price", "amount"),
    ("phases", 0, "items", "platform-fee", 0, "rate_card", "billing_cadence"),
    ("phases", 0, "items", "platform-fee", 0, "annotations"),
    ("phases", 0, "items", "platform-fee", 0, "rate_card", "tax_config"),
]


def set_path(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(PATHS), value=json_values)
def test_mutated_documents_are_accepted_or_refused_with_field_paths(path: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(contract_example())
    set_path(doc, path, value)
    try:
        parse_document(json.dumps(doc))
    except DocumentError as exc:
        assert exc.lines() and all(": " in line for line in exc.lines())


HOSTILE: dict[str, Any] = {
    "huge string": ("name", "x" * 2000),
    "deep json": (("phases", 0, "items", "platform-fee", 0, "annotations"), {"a": json.loads("[" * 40 + "]" * 40)}),
    "unknown currency": ("currency", "XXY"),
    "negative duration": ("billing_cadence", "-P1M"),
    "absurd duration": ("billing_cadence", "P99999999999Y"),
    "fractional month": ("billing_cadence", "P1.5M"),
    "year 9999": ("active_from", "9999-06-01T00:00:00Z"),
    "negative amount": (("phases", 0, "items", "platform-fee", 0, "rate_card", "price", "amount"), "-5"),
    "39 digits": (("phases", 0, "items", "platform-fee", 0, "rate_card", "price", "amount"), "1" * 39),
    "float amount": (("phases", 0, "items", "platform-fee", 0, "rate_card", "price", "amount"), 1.5),
}


def test_each_hostile_document_is_refused_with_exit_2_and_nothing_written(
    db: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    assert (
        runner.invoke(app, ["customers", "upsert", "--namespace", "acme", "--id", "cust_01"], env=cli_env).exit_code
        == 0
    )
    cases = dict(HOSTILE)
    overlapping = contract_example()
    versions = overlapping["phases"][0]["items"]["platform-fee"]
    versions.append({**copy.deepcopy(versions[0]), "id": "it_02", "active_from": "2024-01-10T00:00:00Z"})
    many_phases = contract_example()
    many_phases["phases"] = [
        {**copy.deepcopy(many_phases["phases"][0]), "key": f"p{i}", "id": f"ph_{i}"} for i in range(10_000)
    ]
    for name, (path, value) in cases.items():
        doc = contract_example()
        set_path(doc, path if isinstance(path, tuple) else (path,), value)
        cases[name] = doc
    cases["overlapping versions"] = overlapping
    cases["10,000 phases"] = many_phases
    for name, doc in cases.items():
        file = tmp_path / "doc.json"
        file.write_text(json.dumps(doc))
        began = time.monotonic()
        result = runner.invoke(app, ["subscriptions", "apply", str(file)], env=cli_env)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2, name
        assert errors and "Traceback" not in result.stderr, name
        assert time.monotonic() - began < 30, name  # bounded: refused quickly, not after a crash loop
        with db.connect() as conn:
            counts = [
                conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (subscriptions, subscription_phases, subscription_items)
            ]
        assert counts == [0, 0, 0], name


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_crash_the_parser(raw: bytes) -> None:
    try:
        parse_document(raw)
    except DocumentError as exc:
        assert exc.lines()
