"""Secrets never print (docs/contract.md §1: host and database name only, never a password): the passwords of `DATABASE_URL` and `REDIS_URL` appear in no
`repr` of the settings, no output of `subsync status`, no error message, and no line a worker logs —
its start-up, its messages, Dramatiq's own lines and the connection errors of a Redis outage."""

from __future__ import annotations

import json

from pydantic import SecretStr
from sqlalchemy import make_url
from typer.testing import CliRunner

from tests.builders import enqueue_raw, raw_message, unique
from tests.reliability.processes import Processes, free_port, wait_until, worker_env
from worker.cli import app
from worker.config import Settings
from worker.contract.events import SubscriptionEvent
from worker.queue.broker import build_broker

DB_PASSWORD, REDIS_PASSWORD = "s3cr3t-db-pw", "r3d1s-pw-42"
runner = CliRunner()


def with_password(database_url: str) -> str:
    return make_url(database_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


def assert_no_secret(text: str) -> None:
    assert DB_PASSWORD not in text and REDIS_PASSWORD not in text, text[-3000:]


def test_every_secret_setting_is_a_secret_and_repr_hides_it() -> None:
    settings = Settings(
        DATABASE_URL=f"postgresql://u:{DB_PASSWORD}@db/x",  # type: ignore[call-arg]
        REDIS_URL=f"redis://:{REDIS_PASSWORD}@r:6379/0",
    )
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())):
        assert_no_secret(text)
    secretish = ("url", "password", "secret", "token", "key", "dsn")
    for name, field in Settings.model_fields.items():
        if any(word in name for word in secretish):
            assert field.annotation in (SecretStr, SecretStr | None), name


def test_status_errors_and_a_worker_never_print_a_password(
    database_url: str, cli_env: dict[str, str], processes: Processes
) -> None:
    server = processes.redis("redis-with-password", password=REDIS_PASSWORD)
    namespace = unique("secrets")
    env = {**cli_env, "DATABASE_URL": with_password(database_url), "REDIS_URL": server.url}
    env["SUBSYNC_BROKER_NAMESPACE"] = namespace
    for fmt in ("json", "table"):
        result = runner.invoke(app, ["status", "--format", fmt], env=env)
        assert result.exit_code == 0, result.stderr
        assert_no_secret(result.stdout + result.stderr)
    wrong = {**env, "REDIS_URL": f"redis://:{REDIS_PASSWORD}x@127.0.0.1:{server.port}/0"}
    unreachable = {**env, "DATABASE_URL": f"postgresql+psycopg://u:{DB_PASSWORD}@127.0.0.1:{free_port()}/x"}
    for broken in (wrong, unreachable):
        result = runner.invoke(app, ["status"], env=broken)
        assert result.exit_code != 0
        assert_no_secret(result.stdout + result.stderr)

    worker = processes.worker(worker_env(env["DATABASE_URL"], server.url, namespace), threads=2)
    event = SubscriptionEvent.new("subscription.updated", namespace=namespace, subscription_id="missing")
    enqueue_raw_to(server.url, namespace, json.dumps(raw_message([event.payload()])).encode())
    wait_until(
        lambda: "message.dead_lettered" in worker.log(), "the message to fail for good", 30, on_timeout=worker.tail
    )
    server.kill()  # the worker logs its connection errors
    wait_until(lambda: "connection error" in worker.log().lower(), "a connection error", 30, on_timeout=worker.tail)
    assert "worker process ready" in worker.log() and '"logger": "dramatiq.' in worker.log()  # Dramatiq's own lines
    assert_no_secret(worker.log())


def enqueue_raw_to(url: str, namespace: str, body: bytes) -> None:
    broker = build_broker(url, Settings(broker_namespace=namespace))
    try:
        enqueue_raw(broker, body)
    finally:
        broker.close()
