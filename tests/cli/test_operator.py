"""The command line as operators use it (issue 14, docs/contract.md §5): --version, completion, help on every
option, listed choices, quiet logs, 80-column tables that never split an id, text printed as text (never
rich markup), usage errors on numbers, bulk apply, reconcile, and the embedded servers' commands."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import typer
from dramatiq.brokers.redis import RedisBroker
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from tests.builders import apply, comparable, document, fast_settings, fee, lines_json, usage
from worker import bootstrap
from worker.cli import app
from worker.cli.options import EventType, InvoiceStatus
from worker.cli.output import ELLIPSIS, Column, build_table, common_prefix, elide_middle, shown_width
from worker.cli.queue import QUEUE_NAME as CLI_QUEUE_NAME
from worker.contract.events import EVENT_TYPES, QUEUE_NAME, SUBSCRIPTION_EVENT_ACTOR
from worker.queue.scheduler import run_tick, tick_of
from worker.store.invoices import SETTABLE_STATUSES
from worker.store.tables import subscription_sync_states, subscriptions

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, input=input)


def subsync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console script in a new process (what a shell runs)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )


# --- --version, completion, help, choices --------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    from worker import __version__

    result = invoke({}, "--version")
    assert result.exit_code == 0 and result.stdout == f"subsync {__version__}\n"


def test_shell_completion_script_and_choices() -> None:
    # typer finds the shell by walking the parent processes (shellingham), so run it under bash as a user's
    # shell would; `; exit` keeps bash from exec-ing the command (a test runner without a shell parent fails).
    script = subprocess.run(
        ["bash", "-c", f"{shlex.quote(sys.executable)} -m worker --show-completion; exit $?"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert script.returncode == 0, script.stderr
    assert "_SUBSYNC_COMPLETE" in script.stdout and "complete" in script.stdout

    def complete(words: str) -> set[str]:
        done = subsync(
            env={
                "_SUBSYNC_COMPLETE": "complete_bash",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split(" ")) - 1),
            }
        )
        assert done.returncode == 0, done.stderr
        return set(done.stdout.split())

    assert complete("subsync invoices set-status --status ") == set(SETTABLE_STATUSES)
    assert complete("subsync publish ") >= set(EVENT_TYPES)
    assert complete("subsync lines --format ") == {"table", "json"}
    assert {"reconcile", "embedded", "subscriptions"} <= complete("subsync ")


def _commands(group: Any, path: str = "subsync") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [(path, group)]
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            out += _commands(command, f"{path} {name}")
        else:
            out.append((f"{path} {name}", command))
    return out


def test_every_command_and_option_is_explained() -> None:
    root = typer.main.get_command(app)
    missing = []
    for path, command in _commands(root):
        if not (command.help or command.short_help):
            missing.append(path)
        for param in command.params:
            if not getattr(param, "help", None):
                missing.append(f"{path} {param.name}")
    assert missing == []


def test_enumerations_are_the_contracts() -> None:
    assert tuple(EventType) == EVENT_TYPES
    assert tuple(InvoiceStatus) == SETTABLE_STATUSES
    assert CLI_QUEUE_NAME == QUEUE_NAME
    lines_help = " ".join(invoke({}, "lines", "--help").stdout.split())
    assert lines_help.count("give --customer or --subscription") == 2


def test_the_command_line_imports_no_heavy_package_until_a_command_runs() -> None:
    code = (
        "import sys\n"
        "from worker.cli import run\n"
        "heavy = ('sqlalchemy', 'dramatiq', 'pydantic', 'rich', 'structlog', 'alembic', 'redis')\n"
        "for args in (['--help'], ['lines', '--help'], ['subscriptions', 'apply', '--help'], ['--version']):\n"
        "    try:\n"
        "        run(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    loaded = [m for m in heavy if m in sys.modules]\n"
        "    assert not loaded, (args, loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr


# --- quiet logs ----------------------------------------------------------------------------------


def test_info_logs_only_when_asked(db: Engine, cli_env: dict[str, str]) -> None:
    apply(db, document("acme", {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    args = ("lines", "--namespace", "acme", "--customer", "cust_1", "--format", "json")
    quiet = invoke(cli_env, *args)
    assert quiet.exit_code == 0 and quiet.stderr == "" and json.loads(quiet.stdout) == []
    verbose = invoke(cli_env, "-v", *args)
    assert json.loads(verbose.stderr.splitlines()[0])["event"] == "subsync lines"
    by_setting = invoke({**cli_env, "SUBSYNC_LOG_LEVEL": "info"}, *args)
    assert json.loads(by_setting.stderr.splitlines()[0])["event"] == "subsync lines"
    assert json.loads(verbose.stdout) == json.loads(by_setting.stdout) == []


# --- tables ----------------------------------------------------------------------------------------


def _render(table: Any, width: int = 80, *, wide: bool = False) -> str:
    """What `print_table` prints on a terminal of `width` columns."""
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, markup=False)
    console.width = shown_width(console, table, wide=wide)
    console.print(table)
    return out.getvalue()


def assert_fits_with_whole_ids(text: str, ids: list[str], width: int = 80) -> None:
    """Every line fits; every id is on one line: whole, after a prefix said once (`… starts with P`), or
    shortened (issue 24: `head…tail`, or common parts elided: `…/api-calls/…/period[0]`), its pieces in order."""
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), "\n".join(line for line in lines if len(line) > width)
    prefixes = ["", *re.findall(r"starts with (\S+)", text)]
    tokens = {token.strip("└()") for line in lines for token in line.split()}
    for value in ids:
        shown = {value.removeprefix(p) for p in prefixes if value.startswith(p)}
        whole = bool(shown & tokens)
        elided = any(ELLIPSIS in token and any(_pieces_in_order(token, s) for s in shown) for token in tokens)
        assert whole or elided, (value, text)


def _pieces_in_order(token: str, value: str) -> bool:
    """`token` is `value` with parts replaced by ellipses: its pieces are in `value`, in order, the first
    at its start and the last at its end."""
    pieces = token.split(ELLIPSIS)
    if not value.startswith(pieces[0]) or not value.endswith(pieces[-1]):
        return False
    at = len(pieces[0])
    for piece in pieces[1:-1]:
        found = value.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return at <= len(value) - len(pieces[-1])


LONG_IDS = [f"subscription-{n}-for-the-enterprise-customer-with-a-long-name:{'x' * n}-end" for n in range(1, 6)]


def test_tables_fit_80_columns_without_splitting_ids() -> None:
    columns = [Column("id", "id"), Column("at", "time"), Column("other id", "id"), Column("note", "long")]
    rows = [
        [value, datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), f"inv_01J9Z6{n}ABCDEFGHJKMNPQRSTV", "x" * 300]
        for n, value in enumerate(LONG_IDS)
    ]
    text = _render(build_table("t", columns, rows, width=80))
    assert_fits_with_whole_ids(text, [*LONG_IDS, *(r[2] for r in rows)])
    assert "2024-01-02T03:04:05Z" in text and ".678901" not in text  # timestamps to the second
    wide = _render(build_table("t", columns, rows, width=500, wide=True), width=500)
    assert all(value in wide for value in LONG_IDS) and "x" * 300 in wide


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.text(alphabet="abc-_:/0123456789", min_size=1, max_size=90), min_size=1, max_size=6),
    width=st.integers(min_value=60, max_value=160),
)
def test_any_id_fits_whole_or_elided(ids: list[str], width: int) -> None:
    text = _render(
        build_table(None, [Column("id", "id"), Column("n", "number")], [[i, 1] for i in ids], width=width), width
    )
    assert_fits_with_whole_ids(text, ids, width)


def test_shortening_helpers() -> None:
    assert elide_middle("abcdefghij", 5) == "ab…ij" and elide_middle("abc", 5) == "abc"
    assert common_prefix(["acme-subscription/a", "acme-subscription/b"]) == "acme-subscription/"
    assert common_prefix(["sub_1", "sub_2"]) == ""  # too short to be worth saying once
    assert common_prefix(["acme-subscription/a"]) == ""


def test_lines_table_at_80_columns(db: Engine, cli_env: dict[str, str]) -> None:
    sub = "sub_" + "long-subscription-identifier-" * 3 + "end"
    items = {
        "platform-fee-for-the-enterprise-plan": [fee("it_fee", "100", "2024-01-01T00:00:00Z")],
        "api-calls-metered-by-the-gateway": [usage("it_calls", "0.002", "2024-01-01T00:00:00Z")],
    }
    apply(db, document("acme", items, subscription_id=sub, start="2024-01-01T00:00:00Z"))
    assert (
        invoke(
            cli_env, "sync", "--namespace", "acme", "--subscription", sub, "--as-of", "2024-04-15T00:00:00Z"
        ).exit_code
        == 0
    )
    env = {**cli_env, "COLUMNS": "80"}
    result = invoke(env, "lines", "--namespace", "acme", "--subscription", sub, "--format", "table")
    assert result.exit_code == 0, result.stderr
    refs = [line["unique_reference_id"] for line in lines_json(db, "acme")]
    assert refs and "identities below are under" in result.stdout
    assert_fits_with_whole_ids(result.stdout, [f"{sub}/", *(r.removeprefix(f"{sub}/") for r in refs)])
    wide = invoke(
        {**cli_env, "COLUMNS": "400"},
        "lines",
        "--namespace",
        "acme",
        "--subscription",
        sub,
        "--wide",
        "--format",
        "table",
    )
    assert all(r.removeprefix(f"{sub}/") in wide.stdout for r in refs)


HOSTILE = "[/oops] [bold]x[/bold] [link=file:///etc]y"


def test_text_prints_as_text_never_markup(db: Engine, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "COLUMNS": "200"}
    result = invoke(
        env, "customers", "upsert", "--namespace", "acme", "--id", "c1", "--name", HOSTILE, "--format", "table"
    )
    assert result.exit_code == 0, result.stderr
    assert HOSTILE in result.stdout


@pytest.fixture
def worker_broker(db: Engine, redis_broker: RedisBroker, broker_namespace: str) -> Any:
    wired = bootstrap.worker(fast_settings(broker_namespace), redis_broker, engine=lambda: db)
    worker = dramatiq.Worker(redis_broker, queues={QUEUE_NAME}, worker_timeout=50, worker_threads=2)
    worker.start()
    yield wired
    worker.stop()


def test_dead_letters_table_summarises_hostile_events(
    worker_broker: Any, cli_env: dict[str, str], broker_namespace: str
) -> None:
    broker = worker_broker.broker
    payload = {"type": "subscription.created", "event_id": "[/oops]" * 20, "namespace": "[/x]", "subscription_id": "s"}
    broker.enqueue(
        dramatiq.Message(
            queue_name=QUEUE_NAME, actor_name=SUBSCRIPTION_EVENT_ACTOR, args=(payload,), kwargs={}, options={}
        )
    )
    broker.join(QUEUE_NAME, interval=20, timeout=20_000)
    env = {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace, "COLUMNS": "80"}
    table = invoke(env, "dead-letters", "list", "--format", "table")
    assert table.exit_code == 0, table.stderr
    letters = json.loads(invoke(env, "dead-letters", "list", "--format", "json").stdout)
    assert [d["event"] for d in letters] == [payload]  # JSON stays complete
    # the id is printed as its shortest unique prefix, which `dead-letters retry` accepts (issue 24)
    assert all(len(line) <= 80 for line in table.stdout.splitlines())
    assert f"{letters[0]['id'][:8]}…" in table.stdout.split()
    wide = invoke({**env, "COLUMNS": "300"}, "dead-letters", "list", "--format", "table", "--wide")
    assert "subscription.created [/x]/s" in wide.stdout and "namespace: must be" in wide.stdout


# --- usage errors on numbers and names ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["scheduler", "--interval", "inf"],
        ["scheduler", "--interval", "nan"],
        ["scheduler", "--interval", "-1"],
        ["scheduler", "--interval", "1e300"],
        ["dead-letters", "list", "--limit", "0"],
        ["dead-letters", "list", "--limit", "99999999999999999999"],
        ["reconcile", "--limit", "0"],
        ["reconcile", "--limit", "-5"],
        ["worker", "--processes", "0"],
        ["worker", "--threads", "nan"],
        ["worker", "--metrics-port", "70000"],
        ["invoices", "list", "--namespace", "acme", "--customer", "c", "--format", "yaml"],
    ],
)
def test_bad_numbers_and_choices_are_usage_errors(cli_env: dict[str, str], args: list[str]) -> None:
    result = invoke(cli_env, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr


def test_downgrade_to_an_unknown_revision_is_a_usage_error(empty_database: Any, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": empty_database()}
    assert invoke(env, "db", "upgrade").exit_code == 0
    result = invoke(env, "db", "downgrade", "--to", "nosuchrev")
    assert result.exit_code == 2 and "nosuchrev" in result.stderr and "unexpected" not in result.stderr


# --- bulk apply ------------------------------------------------------------------------------------


def _doc(subscription_id: str) -> dict[str, Any]:
    items = {"platform-fee": [fee(f"fee_{subscription_id}", "100", "2024-01-01T00:00:00Z")]}
    return document("bulk", items, subscription_id=subscription_id)


def _stored_ids(db: Engine) -> set[str]:
    with db.connect() as conn:
        return set(conn.execute(select(subscriptions.c.id).where(subscriptions.c.namespace == "bulk")).scalars())


def test_bulk_apply_applies_the_valid_and_reports_the_invalid(
    db: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    invoke(cli_env, "customers", "upsert", "--namespace", "bulk", "--id", "cust_1")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(_doc("sub_a")))
    (folder / "b.json").write_text(json.dumps(_doc("sub_b")))
    bad = _doc("sub_bad")
    bad["currency"] = "usd"
    (folder / "c.json").write_text(json.dumps(bad))
    (folder / "d.json").write_text("{not json")
    extra = tmp_path / "e.json"
    extra.write_text(json.dumps(_doc("sub_e")))

    result = invoke(cli_env, "subscriptions", "apply", str(folder), str(extra), "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    results = {Path(d["source"]).name: d["result"] for d in report["documents"]}
    assert results == {
        "a.json": "created",
        "b.json": "created",
        "c.json": "failed",
        "d.json": "failed",
        "e.json": "created",
    }
    assert report["applied"] == 3 and report["failed"] == 2
    failed = {Path(d["source"]).name: d["errors"] for d in report["documents"] if d["result"] == "failed"}
    assert any("currency" in line for line in failed["c.json"]) and failed["d.json"]
    assert "2 document(s) failed" in result.stderr and "c.json" in result.stderr and "d.json" in result.stderr
    assert _stored_ids(db) == {"sub_a", "sub_b", "sub_e"}

    lines = "\n".join([json.dumps(_doc("sub_a")), json.dumps(_doc("sub_f")), "[]", ""])
    again = invoke(cli_env, "subscriptions", "apply", "-", "--format", "json", input=lines)
    assert again.exit_code == 1
    assert [(d["source"], d["result"]) for d in json.loads(again.stdout)["documents"]] == [
        ("stdin:1", "replaced"),
        ("stdin:2", "created"),
        ("stdin:3", "failed"),
    ]
    assert _stored_ids(db) == {"sub_a", "sub_b", "sub_e", "sub_f"}

    table = invoke({**cli_env, "COLUMNS": "80"}, "subscriptions", "apply", str(folder), "--format", "table")
    assert table.exit_code == 1 and "2 applied, 2 failed" in table.stdout

    single = invoke(
        cli_env, "subscriptions", "apply", "-", "--format", "json", input=json.dumps(_doc("sub_g"), indent=2)
    )
    assert single.exit_code == 0 and json.loads(single.stdout)["id"] == "sub_g"  # one document: as before


# --- reconcile -------------------------------------------------------------------------------------


def _state(db: Engine, namespace: str) -> list[tuple[Any, ...]]:
    s = subscription_sync_states
    with db.connect() as conn:
        rows = conn.execute(
            select(s.c.subscription_id, s.c.has_billables, s.c.next_sync_after).where(s.c.namespace == namespace)
        )
        return sorted(tuple(r) for r in rows)


def _seed_twins(db: Engine) -> None:
    for namespace in ("viaworker", "viacli"):
        for n, start in enumerate(("2024-01-01T00:00:00Z", "2024-03-10T00:00:00Z")):
            items = {
                "platform-fee": [fee(f"fee_{n}", "100", start)],
                "api-calls": [usage(f"calls_{n}", "0.002", start)],
            }
            apply(db, document(namespace, items, subscription_id=f"sub_{n}", customer_id=f"cust_{n}", start=start))


def test_reconcile_does_what_the_scheduler_and_a_worker_do(
    db: Engine, worker_broker: Any, cli_env: dict[str, str], broker_namespace: str
) -> None:
    _seed_twins(db)
    env = {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace}

    planned = json.loads(invoke(env, "reconcile", "--namespace", "viacli", "--dry-run", "--format", "json").stdout)
    assert planned["due"] == 2 and planned["dry_run"] and _state(db, "viacli") == []  # nothing written

    limited = json.loads(invoke(env, "reconcile", "--namespace", "viacli", "--limit", "1", "--format", "json").stdout)
    assert limited["due"] == 2 and limited["reconciled"] == 1 and len(_state(db, "viacli")) == 1
    done = invoke(env, "reconcile", "--namespace", "viacli", "--format", "json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["reconciled"] == 1

    # The scheduler's tick enqueues reconcile_due; the worker pages the due subscriptions (only the twins
    # in "viaworker" are still due) and syncs each through reconcile_subscription.
    broker = worker_broker.broker
    assert run_tick(broker, 3600.0, tick_of(datetime.now(UTC).timestamp(), 3600.0) + 10_000) is not None
    broker.join(QUEUE_NAME, interval=20, timeout=30_000)

    assert comparable(lines_json(db, "viacli", "cust_0")) == comparable(lines_json(db, "viaworker", "cust_0"))
    assert comparable(lines_json(db, "viacli", "cust_1")) == comparable(lines_json(db, "viaworker", "cust_1"))
    assert lines_json(db, "viacli", "cust_0")
    assert _state(db, "viacli") == _state(db, "viaworker") and len(_state(db, "viacli")) == 2
    again = json.loads(invoke(env, "reconcile", "--format", "json").stdout)
    assert again["due"] == 0 and again["reconciled"] == 0


# --- embedded servers --------------------------------------------------------------------------------


def test_embedded_status_and_stop_start_nothing(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "SUBSYNC_HOME": str(tmp_path / "home")}
    status = invoke(env, "embedded", "status", "--format", "json")
    assert status.exit_code == 0, status.stderr
    servers = {s["server"]: s for s in json.loads(status.stdout)["servers"]}
    assert servers["postgres"]["running"] is False and servers["redis"]["running"] is False
    table = invoke(env, "embedded", "status", "--format", "table")
    assert "stopped" in table.stdout and "not used by this environment" in table.stdout
    stop = invoke(env, "embedded", "stop", "--format", "json")
    assert json.loads(stop.stdout)["stopped"] == {"postgres": False, "redis": False}
    assert not (tmp_path / "home" / "postgres").exists()
