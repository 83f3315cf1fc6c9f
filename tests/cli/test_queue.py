"""`subsync publish`, `status`, `dead-letters` and the command `subsync worker` runs (docs/contract.md §5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.redis import RedisBroker
from typer.testing import CliRunner

from worker.cli import app
from worker.cli.queue import worker_command
from worker.cli.runtime import Runtime
from worker.config import load_settings
from worker.queue.keys import queue_keys

runner = CliRunner()


@pytest.fixture
def env(cli_env: dict[str, str], broker_namespace: str) -> dict[str, str]:
    return {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace}


def ok_json(env: dict[str, str], *args: str) -> Any:
    result = runner.invoke(app, [*args, "--format", "json"], env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_publish_enqueues_the_event(env: dict[str, str], redis_broker: RedisBroker) -> None:
    out = ok_json(
        env,
        "publish",
        "subscription.updated",
        "--namespace",
        "acme",
        "--subscription",
        "sub_01",
        "--as-of",
        "2024-02-01T00:00:00+01:00",
    )
    assert out["queue"] == "subscription-sync" and out["actor"] == "subscription_event"
    assert out["event"]["as_of"] == "2024-01-31T23:00:00Z" and out["event"]["type"] == "subscription.updated"
    stored = [json.loads(v) for v in redis_broker.client.hvals(queue_keys(redis_broker)["messages"])]
    assert [(m["actor_name"], m["message_id"], m["args"][0]) for m in stored] == [
        ("subscription_event", out["message_id"], out["event"])
    ]
    invoice = ok_json(env, "publish", "invoice.created", "--namespace", "acme", "--invoice", "inv_1")
    assert invoice["actor"] == "invoice_created" and invoice["event"]["invoice_id"] == "inv_1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["subscription.renamed", "--namespace", "acme", "--subscription", "s"], "is not one of"),
        (["subscription.created", "--namespace", "acme", "--invoice", "i"], "takes a subscription id"),
        (["invoice.created", "--namespace", "acme", "--subscription", "s"], "takes an invoice id"),
        (["subscription.created", "--namespace", "a/b", "--subscription", "s"], "must be 1-128 characters"),
        (["subscription.created", "--namespace", "acme", "--subscription", "s", "--as-of", "soon"], "RFC 3339"),
    ],
)
def test_publish_refuses_bad_input_with_exit_code_2(env: dict[str, str], args: list[str], message: str) -> None:
    result = runner.invoke(app, ["publish", *args], env=env)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_status_and_dead_letters_on_an_empty_queue(env: dict[str, str], db: object) -> None:
    status = ok_json(env, "status")
    assert status["queue"] == "subscription-sync"
    assert {k: status[k] for k in ("ready", "in_progress", "delayed", "dead_letters")} == dict.fromkeys(
        ("ready", "in_progress", "delayed", "dead_letters"), 0
    )
    assert status["oldest_overdue_next_sync_after"] is None and status["due_subscriptions"] == 0
    assert ok_json(env, "dead-letters", "list") == []
    assert ok_json(env, "dead-letters", "retry", "--all") == {"retried": []}
    result = runner.invoke(app, ["dead-letters", "retry"], env=env)
    assert result.exit_code == 2 and "give dead-letter ids or --all" in result.stderr
    result = runner.invoke(app, ["dead-letters", "retry", "nope"], env=env)
    assert result.exit_code == 1 and "not in the dead-letter queue: nope" in result.stderr


def test_status_table_uses_readable_labels_and_json_keeps_its_keys(env: dict[str, str], db: object) -> None:
    keys = ok_json(env, "status")
    result = runner.invoke(app, ["status", "--format", "table"], env={**env, "COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    fields = {line.split("  ")[0].strip() for line in result.stdout.splitlines()[3:] if line.strip()}
    assert {"ready messages", "in progress", "dead letters", "subscriptions due", "stuck after (s)"} <= fields
    assert not {k for k in keys if "_" in k} & fields  # no snake_case key is shown as a label
    assert "in_progress" in keys and "stuck_after_seconds" in keys


def test_worker_execs_dramatiq_with_the_resolved_urls(
    monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str], tmp_path: Path
) -> None:
    for key, value in cli_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SUBSYNC_METRICS_DIR", str(tmp_path / "metrics"))
    runtime = Runtime(load_settings())
    argv, env = worker_command(runtime, 3, 5, 0)
    assert argv[1:] == [
        "-m",
        "worker.process",
        "worker.process:main",
        "--processes",
        "3",
        "--threads",
        "5",
        "--queues",
        "subscription-sync",
        "--skip-logging",
        "--worker-shutdown-timeout",
        "35000",
    ]
    assert env["DATABASE_URL"] == cli_env["DATABASE_URL"] and env["REDIS_URL"] == cli_env["REDIS_URL"]
    assert env["SUBSYNC_WORKER_THREADS"] == "5" and "SUBSYNC_METRICS_DIR" not in env
    _, with_metrics = worker_command(runtime, 1, 1, 19191)
    assert with_metrics["SUBSYNC_METRICS_HOST"] == "0.0.0.0"  # the documented default
    _, on_loopback = worker_command(runtime, 1, 1, 19191, "127.0.0.1")
    assert on_loopback["SUBSYNC_METRICS_HOST"] == on_loopback["dramatiq_prom_host"] == "127.0.0.1"
    assert with_metrics["dramatiq_prom_port"] == "19191"
    assert with_metrics["PROMETHEUS_MULTIPROC_DIR"] == with_metrics["SUBSYNC_METRICS_DIR"] == str(tmp_path / "metrics")


@pytest.mark.parametrize("host", ["", "not a host", "-x", "a..b", "999.1.1.1.1", "x" * 300])
def test_worker_refuses_a_bad_metrics_host_with_exit_code_2(
    env: dict[str, str], host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_exec(*args: object) -> None:
        raise AssertionError("the worker was started")

    monkeypatch.setattr("os.execvpe", no_exec)
    result = runner.invoke(app, ["worker", "--metrics-host", host], env=env)
    assert result.exit_code == 2 and "--metrics-host" in result.stderr
