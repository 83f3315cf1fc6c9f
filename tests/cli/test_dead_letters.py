"""`subsync dead-letters list | retry | delete` on whatever a dead-letter queue holds (issue 21 item 5,
issue 24): every stored envelope lists, however malformed; the table prints an id `retry` and
`delete` accept, and the error; each letter can be retried or deleted (docs/operations.md §5)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from dramatiq.brokers.redis import RedisBroker
from typer.testing import CliRunner

from tests.builders import raw_message
from worker.cli import app
from worker.queue.keys import dead_letter_reason_key, queue_keys

runner = CliRunner()


@pytest.fixture
def env(cli_env: dict[str, str], broker_namespace: str) -> dict[str, str]:
    return {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace, "COLUMNS": "80"}


def invoke(env: dict[str, str], *args: str) -> Any:
    return runner.invoke(app, list(args), env=env)


def dead_letter(broker: RedisBroker, body: bytes, reason: Any = None, dead_id: str | None = None) -> str:
    """Write a dead letter as the Redis broker stores one (score: when, in ms), with a reason record."""
    dead_id = dead_id or str(uuid.uuid4())
    keys = queue_keys(broker)
    pipe = broker.client.pipeline(transaction=True)
    pipe.zadd(keys["dead"], {dead_id: int(time.time() * 1000)})
    pipe.hset(keys["dead_messages"], dead_id, body)
    if reason is not None:
        pipe.set(dead_letter_reason_key(broker.namespace, dead_id), json.dumps(reason))
    pipe.execute()
    return dead_id


EVENT = {"type": "subscription.created", "namespace": "acme", "subscription_id": "sub_1"}


def odd_bodies() -> dict[str, bytes]:
    def with_options(options: Any) -> bytes:
        return json.dumps({**raw_message([EVENT]), "options": options}).encode()

    missing = raw_message([EVENT])
    for name in ("actor_name", "message_id", "options", "args"):
        missing.pop(name)
    return {
        "options 1.5": with_options(1.5),
        "options x": with_options("x"),
        "options [1]": with_options([1]),
        "retries x": with_options({"retries": "x"}),
        "missing fields": json.dumps(missing).encode(),
        "args an object": json.dumps({**raw_message([EVENT]), "args": {"a": 1}}).encode(),
        "a JSON array": b"[1, 2]",
        "not JSON": b"\xff\xfe not json {",
        "empty": b"",
    }


ODD_REASONS = [None, {"reason": 5, "attempts": "many", "error": ["x"]}, "just text", [1]]


def test_every_malformed_dead_letter_lists_and_can_be_retried_or_deleted(
    env: dict[str, str], redis_broker: RedisBroker
) -> None:
    ids = {
        name: dead_letter(redis_broker, body, ODD_REASONS[i % len(ODD_REASONS)])
        for i, (name, body) in enumerate(odd_bodies().items())
    }
    listed = invoke(env, "dead-letters", "list", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    letters = {d["id"]: d for d in json.loads(listed.stdout)}
    assert set(letters) == set(ids.values())
    assert letters[ids["not JSON"]]["event"].endswith("not json {")  # shown as stored
    assert letters[ids["options [1]"]]["event"] == EVENT

    table = invoke(env, "dead-letters", "list", "--format", "table")
    assert table.exit_code == 0, table.stderr
    assert all(len(line) <= 80 for line in table.stdout.splitlines()), table.stdout
    assert "error" in table.stdout.splitlines()[1]

    # half are retried by the id the table printed, the rest deleted the same way
    firsts = [row.split()[0] for row in table.stdout.splitlines()[3:] if row.strip() and not row.startswith(" ")]
    shown = {token for token in firsts if any(i.startswith(token.removesuffix("…")) for i in ids.values())}
    assert len(shown) == len(ids), table.stdout  # one printed id per letter
    retry_ids = sorted(shown)[: len(shown) // 2]
    delete_ids = sorted(shown)[len(shown) // 2 :]
    retried = invoke(env, "dead-letters", "retry", *retry_ids, "--format", "json")
    assert retried.exit_code == 0, retried.stderr
    assert len(json.loads(retried.stdout)["retried"]) == len(retry_ids)
    deleted = invoke(env, "dead-letters", "delete", *delete_ids, "--format", "json")
    assert deleted.exit_code == 0, deleted.stderr
    assert len(json.loads(deleted.stdout)["deleted"]) == len(delete_ids)
    assert json.loads(invoke(env, "dead-letters", "list", "--format", "json").stdout) == []
    # the retried ones are back on the queue, each under its own id, as they were stored
    keys = queue_keys(redis_broker)
    assert redis_broker.client.llen(keys["ready"]) == len(retry_ids)


def test_the_printed_id_is_accepted_and_delete_all_empties_the_queue(
    env: dict[str, str], redis_broker: RedisBroker
) -> None:
    body = json.dumps(raw_message([EVENT])).encode()
    reason = {"reason": "not_found", "error": "subscription acme/sub_1 does not exist", "attempts": 2}
    first = dead_letter(redis_broker, body, reason, dead_id="subsync-dead-letter-0001")
    dead_letter(redis_broker, body, reason, dead_id="subsync-dead-letter-0002")
    table = invoke({**env, "COLUMNS": "160"}, "dead-letters", "list", "--format", "table")
    assert table.exit_code == 0, table.stderr
    assert "subscription acme/sub_1 does not exist" in table.stdout  # the error column
    narrow = invoke(env, "dead-letters", "list", "--format", "table")
    assert "subsync-dead-letter-0001" in narrow.stdout  # shared parts are never cut from the id

    ambiguous = invoke(env, "dead-letters", "retry", "subsync-dead-letter-000")
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.stderr
    unknown = invoke(env, "dead-letters", "delete", first, "no-such-dead-letter")
    assert unknown.exit_code == 1 and "no-such-dead-letter" in unknown.stderr
    assert len(json.loads(invoke(env, "dead-letters", "list", "--format", "json").stdout)) == 2  # nothing deleted
    assert invoke(env, "dead-letters", "delete").exit_code == 2

    deleted = invoke(env, "dead-letters", "delete", "--all", "--format", "json")
    assert deleted.exit_code == 0, deleted.stderr
    assert sorted(json.loads(deleted.stdout)["deleted"]) == [first, "subsync-dead-letter-0002"]
    assert redis_broker.client.exists(dead_letter_reason_key(redis_broker.namespace, first)) == 0
    assert json.loads(invoke(env, "dead-letters", "list", "--format", "json").stdout) == []
