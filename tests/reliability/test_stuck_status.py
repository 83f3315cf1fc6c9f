"""`subsync status` shows anything stuck (docs/operations.md §4): messages in flight on a
worker whose heartbeat expired, in flight for longer than the threshold since they were queued, stored but
neither queued nor in flight (nothing will ever run them), and delayed beyond any retry backoff.

The Redis state is what a killed worker, a foreign producer or a bug leaves, written with raw commands in
Dramatiq's layout (`worker.queue.keys`); the command is the CLI's, as an operator runs it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from typer.testing import CliRunner

from tests.builders import enqueue_raw, raw_message
from worker.cli import app
from worker.contract.events import QUEUE_NAME
from worker.queue.keys import in_flight_key, queue_keys

runner = CliRunner()
HOUR_MS = 3_600_000


def in_flight(broker: RedisBroker, worker_id: str, heartbeat_ms: int, queue: str, message: dict[str, Any]) -> str:
    """A message fetched by worker `worker_id` (last heard of at `heartbeat_ms`) and not acknowledged."""
    redis_id = message["options"]["redis_message_id"]
    keys = queue_keys(broker, QUEUE_NAME)
    pipe = broker.client.pipeline(transaction=True)
    pipe.hset(keys["delayed_messages" if queue.endswith(".DQ") else "messages"], redis_id, json.dumps(message))
    pipe.sadd(in_flight_key(broker.namespace, worker_id, queue), redis_id)
    pipe.zadd(keys["heartbeats"], {worker_id: heartbeat_ms})
    pipe.execute()
    return str(redis_id)


def test_status_lists_every_stuck_message_and_counts_them(
    cli_env: dict[str, str], broker: RedisBroker, broker_namespace: str
) -> None:
    now = int(time.time() * 1000)
    dead_worker, live_worker = str(uuid.uuid4()), str(uuid.uuid4())
    fresh = raw_message([{"type": "x"}])
    expected = {
        in_flight(broker, dead_worker, now - HOUR_MS, QUEUE_NAME, raw_message([1])): "in_progress_dead_worker",
        in_flight(
            broker, live_worker, now, QUEUE_NAME, raw_message([2], message_timestamp=now - 2 * HOUR_MS)
        ): "in_progress_too_long",
    }
    unowned = raw_message([3])  # stored, but on no list and in no worker's in-flight set
    unowned_id = unowned["options"]["redis_message_id"]
    broker.client.hset(queue_keys(broker)["messages"], unowned_id, json.dumps(unowned))
    expected[unowned_id] = "unowned"
    far = raw_message([4], queue_name=f"{QUEUE_NAME}.DQ")
    far["options"]["eta"] = now + 300 * 365 * 24 * HOUR_MS
    expected[enqueue_raw(broker, json.dumps(far).encode(), queue_name=f"{QUEUE_NAME}.DQ")] = (
        "delayed_beyond_max_backoff"
    )
    # and what is not stuck: queued, just fetched by a live worker, a retry waiting for its backoff
    enqueue_raw(broker, json.dumps(raw_message([5])).encode())
    in_flight(broker, live_worker, now, QUEUE_NAME, fresh)
    soon = raw_message([6], queue_name=f"{QUEUE_NAME}.DQ")
    soon["options"]["eta"] = now + 1000
    in_flight(broker, live_worker, now, f"{QUEUE_NAME}.DQ", soon)

    env = {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace, "SUBSYNC_BROKER_HEARTBEAT_TIMEOUT_MS": "60000"}
    result = runner.invoke(app, ["status", "--format", "json", "--stuck-after", "3600"], env=env)
    assert result.exit_code == 0, result.stderr
    status = json.loads(result.stdout)
    assert {m["id"]: m["why"] for m in status["stuck_messages"]} == expected
    assert status["stuck"] == 4 and status["stuck_after_seconds"] == 3600
    assert {k: status[k] for k in set(expected.values())} == dict.fromkeys(set(expected.values()), 1)
    assert {k: status[k] for k in ("ready", "in_progress", "delayed")} == {"ready": 1, "in_progress": 4, "delayed": 2}
    [dead] = [m for m in status["stuck_messages"] if m["why"] == "in_progress_dead_worker"]
    assert dead["worker"] == dead_worker and dead["actor_name"] == "subscription_event"

    table = runner.invoke(app, ["status", "--format", "table", "--stuck-after", "3600"], env={**env, "COLUMNS": "300"})
    assert table.exit_code == 0, table.stderr
    assert "stuck messages" in table.stdout
    for redis_id, why in expected.items():
        assert redis_id in table.stdout and why in table.stdout

    # a longer threshold: the message queued two hours ago is not stuck any more
    relaxed = json.loads(runner.invoke(app, ["status", "--format", "json", "--stuck-after", "10800"], env=env).stdout)
    assert relaxed["stuck"] == 3 and relaxed["in_progress_too_long"] == 0
