"""Through the command line: the structural rules of docs/contract.md §3 (issue 17) and the
text rules (issue 11 "Bad text"): each refused by `subscriptions apply` with exit 2, one line naming the
field, nothing written; a subscription stored before a rule existed still prints, and its sync fails
once, naming the rule."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner, Result

from tests.builders import contract_example, store_unchecked, t, unit
from worker.cli import app
from worker.contract.events import InvalidEvent, parse_event
from worker.store.tables import invoice_lines, subscription_items, subscription_phases, subscriptions

runner = CliRunner()
Doc = dict[str, Any]


def cli(env: dict[str, str], *args: str) -> Result:
    return runner.invoke(app, list(args), env=env)


def apply(env: dict[str, str], tmp_path: Path, doc: Doc) -> Result:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))  # ensure_ascii: NUL and lone surrogates travel as \u escapes
    return cli(env, "subscriptions", "apply", str(path), "--format", "json")


def errors(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def rows(db: Engine) -> list[int]:
    with db.connect() as conn:
        return [
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (subscriptions, subscription_phases, subscription_items)
        ]


def version0(doc: Doc) -> Doc:
    return doc["phases"][0]["items"]["platform-fee"][0]


def card0(doc: Doc) -> Doc:
    return version0(doc)["rate_card"]


def second_phase(doc: Doc, start: str = "2024-03-01T00:00:00Z") -> Doc:
    phase = copy.deepcopy(doc["phases"][0]) | {"key": "later", "id": "ph_02", "active_from": start}
    phase["items"]["platform-fee"][0].update(id="it_02", active_from=start)
    doc["phases"].append(phase)
    return doc


def _phase_after_start(d: Doc) -> None:  # the example: synced with "no phase ... is active"
    d["phases"][0]["active_from"] = version0(d)["active_from"] = "2024-02-01T00:00:00Z"


def _version_before_subscription(d: Doc) -> None:
    d["phases"][0]["active_from"] = version0(d)["active_from"] = "2023-12-01T00:00:00Z"


def _version_in_next_phase(d: Doc) -> None:
    second_phase(d)
    version0(d).update(active_from="2024-03-01T00:00:00Z")
    card0(d)["billing_cadence"] = None  # a one-time fee there failed every sync ("the phase is not active")


def _one_time_usage(d: Doc) -> None:
    card0(d).update(billing_cadence=None, price=unit("1"), feature_key="calls")


def _zero_length_one_time(d: Doc) -> None:
    card0(d)["billing_cadence"] = None
    version0(d)["active_to"] = version0(d)["active_from"]


def _usage_without_feature(d: Doc) -> None:
    card0(d)["price"] = unit("1")


STRUCTURE: dict[str, tuple[Callable[[Doc], None], str, str]] = {
    "no phase": (lambda d: d.update(phases=[]), "phases", "phases"),
    "first phase after the start": (_phase_after_start, "phases[0].active_from", "phase-coverage"),
    "version before its phase": (
        lambda d: version0(d).update(active_from="2023-12-31T23:59:59Z"),
        "phases[0].items.platform-fee[0].active_from",
        "version-in-phase",
    ),
    "version in the next phase": (
        _version_in_next_phase,
        "phases[0].items.platform-fee[0].active_from",
        "version-in-phase",
    ),
    "version before the subscription": (
        _version_before_subscription,
        "phases[0].items.platform-fee[0].active_from",
        "version-in-subscription",
    ),
    "one-time usage price": (_one_time_usage, "phases[0].items.platform-fee[0].rate_card.price", "one-time-price"),
    "zero-length one-time fee": (
        _zero_length_one_time,
        "phases[0].items.platform-fee[0].active_to",
        "one-time-length",
    ),
    "usage price without feature key": (
        _usage_without_feature,
        "phases[0].items.platform-fee[0].rate_card.feature_key",
        "usage-feature-key",
    ),
}


@pytest.mark.parametrize("case", list(STRUCTURE))
def test_each_structural_rule_is_refused_naming_the_field_and_the_rule(
    db: Engine, cli_env: dict[str, str], tmp_path: Path, case: str
) -> None:
    change, field, rule = STRUCTURE[case]
    doc = contract_example()
    change(doc)
    result = apply(cli_env, tmp_path, doc)
    assert result.exit_code == 2, result.stderr
    [line] = [line for line in errors(result) if f"(rule {rule})" in line]
    assert line.startswith(f"error: {field}: "), line
    assert rows(db) == [0, 0, 0]


TEXT: dict[str, tuple[tuple[Any, ...], Any, str, str]] = {
    "NUL in a name": (("name",), "Pro\x00plan", "name", "NUL"),
    "NUL in a rate card name": (
        ("phases", 0, "items", "platform-fee", 0, "rate_card", "name"),
        "fee\x00",
        "phases[0].items.platform-fee[0].rate_card.name",
        "NUL",
    ),
    "lone surrogate in a description": (
        ("phases", 0, "items", "platform-fee", 0, "rate_card", "description"),
        "x\ud800",
        "phases[0].items.platform-fee[0].rate_card.description",
        "lone surrogate",
    ),
    "NUL in an annotation value": (
        ("phases", 0, "items", "platform-fee", 0, "annotations"),
        {"team": {"owner": ["ok", "a\x00"]}},
        "phases[0].items.platform-fee[0].annotations.team.owner[1]",
        "NUL",
    ),
    "NUL in an annotation key": (
        ("phases", 0, "items", "platform-fee", 0, "annotations"),
        {"a\x00b": 1},
        "phases[0].items.platform-fee[0].annotations.'a\\x00b' (key)",
        "NUL",
    ),
    "lone surrogate in a tax config key": (
        ("phases", 0, "items", "platform-fee", 0, "rate_card", "tax_config"),
        {"stripe": {"\udc00": "x"}},
        "phases[0].items.platform-fee[0].rate_card.tax_config.stripe.'\\udc00' (key)",
        "lone surrogate",
    ),
    "Arabic-Indic digit in a cadence": (("billing_cadence",), "P١M", "billing_cadence", "ASCII digits"),
    "Arabic-Indic digits in an amount": (
        ("phases", 0, "items", "platform-fee", 0, "rate_card", "price", "amount"),
        "١٢",
        "phases[0].items.platform-fee[0].rate_card.price.amount",
        "ASCII digits",
    ),
    "full-width year": (("active_from",), "２０２４-01-01T00:00:00Z", "active_from", "ASCII digits"),
    "Devanagari digit in an item cadence": (
        ("phases", 0, "items", "platform-fee", 0, "rate_card", "billing_cadence"),
        "P१M",
        "phases[0].items.platform-fee[0].rate_card.billing_cadence",
        "ASCII digits",
    ),
}


@pytest.mark.parametrize("case", list(TEXT))
def test_bad_text_is_refused_with_exit_2_naming_the_field(
    db: Engine, cli_env: dict[str, str], tmp_path: Path, case: str
) -> None:
    path, value, field, reason = TEXT[case]
    doc = contract_example()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    result = apply(cli_env, tmp_path, doc)
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    [line] = errors(result)
    assert line.startswith(f"error: {field}: ") and reason in line, line
    assert rows(db) == [0, 0, 0]


def test_times_with_other_digits_are_refused_in_events_and_options(cli_env: dict[str, str]) -> None:
    base = {"type": "subscription.updated", "namespace": "acme", "subscription_id": "sub_01", "event_id": "e1"}
    for field, value in (("as_of", "２０２４-02-01T00:00:00Z"), ("occurred_at", "2024-0٢-01T00:00:00Z")):
        event = base | {"occurred_at": "2024-02-01T00:00:00Z", field: value}
        with pytest.raises(InvalidEvent) as refused:
            parse_event(event)
        assert refused.value.problems == [f"{field}: must be written with ASCII digits 0-9 only"]
    with pytest.raises(InvalidEvent, match="event_id"):
        parse_event(base | {"event_id": "e\x00", "occurred_at": "2024-02-01T00:00:00Z"})
    for args in (
        ("sync", "--namespace", "acme", "--subscription", "sub_01", "--as-of", "２０２４-02-01T00:00:00Z"),
        (
            "publish",
            "subscription.updated",
            "--namespace",
            "acme",
            "--subscription",
            "sub_01",
            "--as-of",
            "2024-0٢-01T00:00:00Z",
        ),
    ):
        result = cli(cli_env, *args)
        assert result.exit_code == 2, result.output
        assert "ASCII digits" in result.output


def test_a_stored_subscription_breaking_a_rule_still_prints_and_its_sync_fails_naming_the_rule(
    db: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert cli(cli_env, "customers", "upsert", "--namespace", "acme", "--id", "cust_01").exit_code == 0
    assert apply(cli_env, tmp_path, contract_example()).exit_code == 0
    # written before the rules existed: a start before the first phase, a cadence with Arabic-Indic digits
    for values, named in (
        ({"active_from": t("2023-12-01")}, "rule phase-coverage"),
        ({"billing_cadence": "P١M"}, "ASCII digits"),
    ):
        store_unchecked(db, "acme", "sub_01", **values)
        shown = cli(cli_env, "subscriptions", "get", "--namespace", "acme", "--id", "sub_01", "--format", "json")
        assert shown.exit_code == 0, shown.stderr
        assert json.loads(shown.stdout)["phases"][0]["key"] == "default"
        synced = cli(
            cli_env, "sync", "--namespace", "acme", "--subscription", "sub_01", "--as-of", "2024-02-01T00:00:00Z"
        )
        assert synced.exit_code == 1, synced.stderr
        [line] = errors(synced)
        assert "sub_01" in line and named in line and "apply a corrected document" in line, line
        with db.connect() as conn:
            assert conn.execute(select(func.count()).select_from(invoice_lines)).scalar_one() == 0
        store_unchecked(db, "acme", "sub_01", active_from=t("2024-01-01"), billing_cadence="P1M")
    # fixed, it syncs again
    ok = cli(cli_env, "sync", "--namespace", "acme", "--subscription", "sub_01", "--as-of", "2024-02-01T00:00:00Z")
    assert ok.exit_code == 0, ok.stderr
