"""Poison and hostile events: rejected at once with the reason (dead-lettered, never retried),
nothing written, no crash loop, bounded time and memory per message.

Limits (docs/contract.md §4 and `worker.contract.events`): a message body over 1 MiB (`MAX_MESSAGE_BYTES`) is refused
before it is decoded; an event argument over 64 KiB of JSON (`MAX_EVENT_BYTES`) or nested deeper than
32 levels (`MAX_EVENT_DEPTH`) is refused before it is validated; ids are 1-128 characters, event ids
1-256, times within the years 1970-9998. Each message also runs under the TimeLimit middleware
(`SUBSYNC_TIME_LIMIT_SECONDS`, 300 s by default).

Fuzzed payloads go through the actor bodies (declared on a StubBroker and called directly); a set
of hand-made poison messages goes through a real `subsync worker` and Redis, as raw messages a
foreign producer could write.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from tests.builders import apply, document, enqueue_raw, fast_settings, fee, lines_json, raw_message, unique
from tests.reliability.processes import Processes, drain, worker_env
from worker.bootstrap import actor_settings
from worker.contract.events import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    MAX_MESSAGE_BYTES,
    InvalidEvent,
    SubscriptionEvent,
)
from worker.contract.fields import is_valid_id
from worker.queue.actors import Actors, declare_actors
from worker.queue.broker import build_middleware
from worker.queue.dead_letters import list_dead_letters
from worker.queue.failures import INVALID_ENVELOPE, INVALID_PAYLOAD, RetryPolicy, classify
from worker.store.tables import ALL_TABLES

NS = "acme"
AS_OF = datetime(2024, 2, 15, tzinfo=UTC)
VALID: dict[str, Any] = {
    "type": "subscription.updated",
    "namespace": NS,
    "subscription_id": "sub_1",
    "event_id": "evt-1",
    "occurred_at": "2024-02-15T09:30:00Z",
    "as_of": "2024-02-15T00:00:00Z",
}
INVOICE_VALID: dict[str, Any] = {
    **{k: v for k, v in VALID.items() if k != "subscription_id"},
    "type": "invoice.created",
    "invoice_id": "inv_1",
}


def deep(levels: int) -> Any:
    """JSON nested `levels` deep: [[[...]]]."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in ALL_TABLES}


# --- strategies: every payload drawn here is invalid --------------------------------------------

not_a_string = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
huge_string = st.integers(300, 300_000).map(lambda n: "x" * n)
too_deep = st.integers(MAX_EVENT_DEPTH, 3_000).map(deep)
bad_ids = st.sampled_from(
    ["", "a/b", " acme", "-acme", "acme\n", "ü", "a" * 129, "../etc", "x'; DROP TABLE invoices;--"]
) | st.text(min_size=1, max_size=200).filter(lambda s: not is_valid_id(s))
bad_times = (
    st.sampled_from(
        [
            "9999-06-01T00:00:00Z",
            "9998-12-31T23:59:59-01:00",  # year 9999 in UTC
            "1969-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "yesterday",
            "2024-02-15T00:00:00",  # no offset
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "+275760-09-13T00:00:00Z",
            "",
        ]
    )
    | st.text(max_size=40).filter(lambda s: not s[:1].isdigit())
)
bad_event_ids = st.just("") | st.text(min_size=257, max_size=300) | st.sampled_from(["evt\n1", "evt\x00", "\x1b[31m"])
unknown_types = st.text(max_size=50).filter(lambda t: t not in EVENT_TYPES) | st.just("invoice.created")

INVALID_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "type": not_a_string | unknown_types | huge_string | too_deep,
    "namespace": not_a_string | bad_ids | huge_string | too_deep,
    "subscription_id": not_a_string | bad_ids | huge_string | too_deep,
    "event_id": (not_a_string | bad_event_ids | huge_string | too_deep),
    "occurred_at": not_a_string | bad_times | huge_string | too_deep,
    "as_of": not_a_string.filter(lambda v: v is not None) | bad_times | too_deep,
}


@st.composite
def invalid_payloads(draw: st.DrawFn, actor: str) -> Any:
    """An invalid argument for `actor` (`subscription_event` or `invoice_created`)."""
    base, id_field = (VALID, "subscription_id") if actor == "subscription_event" else (INVOICE_VALID, "invoice_id")
    kind = draw(st.sampled_from(["field", "missing", "extra", "not an object"]))
    payload = dict(base)
    if kind == "field":
        name = draw(st.sampled_from(sorted(INVALID_VALUES)))
        values = INVALID_VALUES[name]
        if name == "type":  # the other actor's types are unknown here too
            values = values.filter(lambda v: v != base["type"]) | st.sampled_from(EVENT_TYPES).filter(
                lambda v: v != base["type"] and (v == "invoice.created") != (actor == "invoice_created")
            )
        payload[id_field if name == "subscription_id" else name] = draw(values)
    elif kind == "missing":
        del payload[draw(st.sampled_from(["type", "namespace", id_field, "event_id", "occurred_at"]))]
    elif kind == "extra":  # unknown fields are ignored, but not without limits
        payload[draw(st.text(max_size=10).filter(lambda k: k not in base))] = draw(
            st.integers(MAX_EVENT_BYTES, 3 * MAX_EVENT_BYTES).map(lambda n: "y" * n) | too_deep
        )
    else:
        return draw(not_a_string | st.text(max_size=50) | st.lists(st.just(base), min_size=1, max_size=2))
    return payload


# --- the actor bodies ---------------------------------------------------------------------------


@pytest.fixture
def stub_actors(db: Engine) -> Iterator[tuple[Actors, Any]]:
    """The actors declared on a StubBroker with the test database; the subscription the valid event
    names exists, so an event wrongly accepted would write lines."""
    apply(db, document(NS, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    worker_settings = fast_settings("stub")
    broker = StubBroker(middleware=build_middleware(worker_settings))
    yield declare_actors(broker, actor_settings(worker_settings), engine=lambda: db), worker_settings
    broker.close()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), actor=st.sampled_from(["subscription_event", "invoice_created"]))
def test_fuzzed_payloads_are_rejected_at_once_by_the_actor_bodies(
    db: Engine, stub_actors: tuple[Actors, Any], data: st.DataObject, actor: str
) -> None:
    actors, worker_settings = stub_actors
    payload = data.draw(invalid_payloads(actor), label="payload")
    before = row_counts(db)
    began = time.monotonic()
    with pytest.raises(InvalidEvent) as info:
        getattr(actors, actor).fn(payload)
    assert time.monotonic() - began < 1.0
    assert classify(info.value) == INVALID_PAYLOAD
    assert not RetryPolicy.from_settings(worker_settings).retry_when(0, info.value)  # dead-lettered at once
    assert info.value.problems and all(0 < len(p) < 2_000 for p in info.value.problems)  # a readable reason
    assert row_counts(db) == before


def test_the_valid_event_of_the_fuzzer_is_accepted(db: Engine, stub_actors: tuple[Actors, Any]) -> None:
    """The control: without mutation, the payload syncs and writes lines."""
    actors, _ = stub_actors
    actors.subscription_event.fn(dict(VALID))
    assert len(lines_json(db, NS)) == 3


# --- the real worker ----------------------------------------------------------------------------


def poison_messages(ns: str) -> dict[str, tuple[bytes, str]]:
    """name → (raw message body, expected dead-letter reason)."""
    event = {**VALID, "namespace": ns}

    def with_event(**changes: Any) -> bytes:
        return json.dumps(raw_message([{**event, **changes}])).encode()

    missing_event_id = {k: v for k, v in event.items() if k != "event_id"}
    return {
        "as_of in year 9999": (with_event(as_of="9999-06-01T00:00:00Z"), INVALID_PAYLOAD),
        "unknown type": (with_event(type="subscription.exploded"), INVALID_PAYLOAD),
        "bad namespace": (with_event(namespace="acme/../other"), INVALID_PAYLOAD),
        "id as a number": (with_event(subscription_id=42), INVALID_PAYLOAD),
        "missing event_id": (json.dumps(raw_message([missing_event_id])).encode(), INVALID_PAYLOAD),
        "deep unknown field": (with_event(extra=deep(200)), INVALID_PAYLOAD),
        "huge unknown field": (with_event(extra="z" * (MAX_EVENT_BYTES * 2)), INVALID_PAYLOAD),
        "event is a string": (json.dumps(raw_message(["subscription.updated"])).encode(), INVALID_PAYLOAD),
        "two arguments": (json.dumps(raw_message([event, event])).encode(), INVALID_PAYLOAD),
        "unknown actor": (json.dumps(raw_message([event], actor_name="drop_tables")).encode(), "unknown_actor"),
        "not JSON": (b"subscription.updated acme sub_1", INVALID_PAYLOAD),
        "not UTF-8": (b'{"queue_name": "\xff\xfe"}', INVALID_PAYLOAD),
        "JSON array": (b"[1, 2, 3]", INVALID_ENVELOPE),
        "args is a string": (json.dumps(raw_message("abc")).encode(), INVALID_ENVELOPE),
        "options is a list": (json.dumps(raw_message([event], options=[])).encode(), INVALID_ENVELOPE),
        "no actor_name": (json.dumps({**raw_message([event]), "actor_name": None}).encode(), INVALID_ENVELOPE),
        "100,000 levels deep": (b'{"args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", INVALID_PAYLOAD),
        "2 MiB message": (with_event(extra="w" * (2 * MAX_MESSAGE_BYTES)), INVALID_PAYLOAD),
    }


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_poison_messages_through_a_real_worker_are_dead_lettered_once_and_the_queue_moves_on(
    engine: Engine,
    database_url: str,
    redis_url: str,
    broker: RedisBroker,
    broker_namespace: str,
    processes: Processes,
) -> None:
    poison_ns, good_ns, misfiled_ns = unique("poison"), unique("good"), unique("misfiled")
    for ns in (poison_ns, good_ns, misfiled_ns):
        apply(engine, document(ns, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    worker = processes.worker(worker_env(database_url, redis_url, broker_namespace), threads=2)
    [ready] = [e for e in worker.events() if e.get("event") == "worker process ready"]

    def valid(ns: str) -> dict[str, Any]:
        event = SubscriptionEvent.new("subscription.created", namespace=ns, subscription_id="sub_1", as_of=AS_OF)
        return raw_message([event.payload()])

    poison = poison_messages(poison_ns)
    ids: dict[str, str] = {}
    began = time.monotonic()
    for i, (name, (body, _)) in enumerate(poison.items()):
        ids[name] = enqueue_raw(broker, body)
        if i == len(poison) // 3:  # valid events among them, prefetched in the same batches
            enqueue_raw(broker, json.dumps(valid(good_ns)).encode())
        if i == 2 * len(poison) // 3:  # valid, but its redis_message_id is not the key it is stored under
            enqueue_raw(broker, json.dumps(valid(misfiled_ns)).encode(), redis_id=str(uuid.uuid4()))
    drain(broker, [worker], 30)
    elapsed = time.monotonic() - began

    letters = {letter.id: letter.to_json() for letter in list_dead_letters(broker, limit=100)}
    assert set(letters) == set(ids.values())  # every poison message, and nothing else
    for name, (_, reason) in poison.items():
        letter = letters[ids[name]]
        assert (letter["reason"], letter["attempts"]) == (reason, 1), name
        assert letter["error"], name
    logs = worker.events()
    assert sum(1 for e in logs if e.get("event") == "message.dead_lettered") == len(poison)
    assert not [e for e in logs if e.get("event") == "message.failed" and e.get("will_retry")]
    assert "unexpected error" not in worker.log()  # the consumer never crashed
    assert lines_json(engine, poison_ns) == []
    assert len(lines_json(engine, good_ns)) == len(lines_json(engine, misfiled_ns)) == 3
    handled = [e.get("namespace") for e in logs if e.get("event") == "message.done"]
    assert handled.count(misfiled_ns) == 2  # its event and the invoice.created it caused, each once
    assert elapsed < 20  # twenty messages, each far inside the time limit
    assert peak_rss_kib(ready["pid"]) < 400 * 1024  # the 2 MiB and 100,000-level bodies did not blow up
