"""The envelope of a raw message (everything around the event: `queue_name`, `actor_name`, `args`,
`kwargs`, `options`, `message_id`, `message_timestamp`) is checked before Dramatiq acts on it
(`worker.queue.consumer`): a message a worker cannot honour is dead-lettered at once, once, with the
reason `invalid_envelope` and what is wrong, and the worker keeps every one of its threads.

Each case is written with raw Redis commands, as a foreign producer would (docs/operations.md
§8), and handled by a real `subsync worker`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from tests.builders import apply, document, enqueue_raw, fee, lines_json, raw_message, unique
from tests.reliability.processes import Processes, WorkerProcess, pending, wait_until, worker_env
from worker.contract.events import QUEUE_NAME, SubscriptionEvent
from worker.queue.dead_letters import list_dead_letters
from worker.queue.failures import INVALID_ENVELOPE

DELAY_QUEUE = f"{QUEUE_NAME}.DQ"
YEAR_MS = 365 * 86_400_000


AS_OF = datetime(2024, 2, 15, tzinfo=UTC)


def event(namespace: str) -> dict[str, Any]:
    return SubscriptionEvent.new(
        "subscription.updated", namespace=namespace, subscription_id="sub_1", as_of=AS_OF
    ).payload()


def seeded(engine: Engine, prefix: str) -> str:
    """A new namespace with subscription `sub_1` (an event accepted for it writes 3 lines)."""
    namespace = unique(prefix)
    apply(engine, document(namespace, {"platform-fee": [fee("it_fee", "100", "2024-01-01T00:00:00Z")]}))
    return namespace


def now_ms() -> int:
    return int(time.time() * 1000)


def with_options(**options: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "options": {**message["options"], **options}}

    return change


def with_fields(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda message: {**message, **fields}


#: name → (change to a valid message, the queue it is pushed on, words the dead letter's error contains)
HOSTILE: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str, str]] = {
    "another queue_name": (with_fields(queue_name="some-other-queue"), QUEUE_NAME, "queue_name"),
    "queue_name of the delay queue": (with_fields(queue_name=DELAY_QUEUE), QUEUE_NAME, "queue_name"),
    "queue_name of the dead-letter queue": (with_fields(queue_name=f"{QUEUE_NAME}.XQ"), QUEUE_NAME, "queue_name"),
    "main queue_name on the delay queue": (with_options(eta=0), DELAY_QUEUE, "queue_name"),
    "no eta on the delay queue": (with_fields(queue_name=DELAY_QUEUE), DELAY_QUEUE, "options.eta"),
    "retries a string": (with_options(retries="2"), QUEUE_NAME, "options.retries"),
    "retries negative": (with_options(retries=-1_000_000), QUEUE_NAME, "options.retries"),
    "retries a float": (with_options(retries=1.5), QUEUE_NAME, "options.retries"),
    "eta centuries away": (with_options(eta=now_ms() + 300 * YEAR_MS), QUEUE_NAME, "options.eta"),
    "eta a string": (with_options(eta="tomorrow"), QUEUE_NAME, "options.eta"),
    "eta a float": (with_options(eta=1e300), QUEUE_NAME, "options.eta"),
    "max_retries a string": (with_options(max_retries="3"), QUEUE_NAME, "options.max_retries"),
    "retry_when a string": (with_options(retry_when="always"), QUEUE_NAME, "options.retry_when"),
    "throws a string": (with_options(throws="ValueError"), QUEUE_NAME, "options.throws"),
    "time_limit a string": (with_options(time_limit="1h"), QUEUE_NAME, "options.time_limit"),
    "max_age a list": (with_options(max_age=[1]), QUEUE_NAME, "options.max_age"),
    "pipe_target": (with_options(pipe_target={"queue_name": "x"}), QUEUE_NAME, "options.pipe_target"),
    "on_failure a number": (with_options(on_failure=5), QUEUE_NAME, "options.on_failure"),
    "unknown option": (with_options(colour={"r": [1, None]}), QUEUE_NAME, "options.colour"),
    "empty message_id": (with_fields(message_id=""), QUEUE_NAME, "message_id"),
    "message_id with a newline": (with_fields(message_id="a\nb"), QUEUE_NAME, "message_id"),
    "message_timestamp negative": (with_fields(message_timestamp=-5), QUEUE_NAME, "message_timestamp"),
    "message_timestamp past year 9999": (with_fields(message_timestamp=1e300), QUEUE_NAME, "message_timestamp"),
    "empty actor_name": (with_fields(actor_name=""), QUEUE_NAME, "actor_name"),
}


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def worker_pid(worker: WorkerProcess) -> int:
    [ready] = [e for e in worker.events() if e.get("event") == "worker process ready"]
    return int(ready["pid"])


def handled_namespaces(worker: WorkerProcess) -> list[str]:
    return [str(e.get("namespace")) for e in worker.events() if e.get("event") == "message.done"]


def alive(worker: WorkerProcess) -> bool:
    worker.check_alive()  # fails the wait at once when the worker exits
    return True


def send_valid(broker: RedisBroker, worker: WorkerProcess, namespace: str) -> None:
    """A valid event, handled by this worker before a deadline (its threads still run messages)."""
    enqueue_raw(broker, json.dumps(raw_message([event(namespace)])).encode())
    wait_until(
        lambda: alive(worker) and namespace in handled_namespaces(worker),
        f"the valid event of {namespace} to be handled",
        20,
        on_timeout=worker.tail,
    )


def test_each_hostile_envelope_is_dead_lettered_once_and_the_worker_keeps_its_threads(
    engine: Engine, database_url: str, redis_url: str, broker: RedisBroker, broker_namespace: str, processes: Processes
) -> None:
    good, hostile, after = seeded(engine, "good"), seeded(engine, "hostile"), seeded(engine, "after")
    worker = processes.worker(worker_env(database_url, redis_url, broker_namespace), threads=2)
    pid = worker_pid(worker)
    send_valid(broker, worker, good)
    threads_before = thread_count(pid)

    ids = {}
    for name, (change, queue_name, _) in HOSTILE.items():
        ids[name] = enqueue_raw(
            broker, json.dumps(change(raw_message([event(hostile)]))).encode(), queue_name=queue_name
        )
    wait_until(
        lambda: alive(worker) and pending(broker) == 0,
        "every hostile message to leave the queue",
        30,
        on_timeout=worker.tail,
    )
    send_valid(broker, worker, after)  # the threads still take messages

    letters = {letter.id: letter.to_json() for letter in list_dead_letters(broker, limit=100)}
    assert set(letters) == set(ids.values())
    for name, (_, _, words) in HOSTILE.items():
        letter = letters[ids[name]]
        assert (letter["reason"], letter["attempts"]) == (INVALID_ENVELOPE, 1), (name, letter)
        assert words in letter["error"], (name, letter["error"])
    dead_lettered = [e for e in worker.events() if e.get("event") == "message.dead_lettered"]
    assert len(dead_lettered) == len(HOSTILE)
    assert "Unhandled error" not in worker.log() and "unexpected error" not in worker.log()
    assert thread_count(pid) == threads_before
    assert hostile not in handled_namespaces(worker) and lines_json(engine, hostile) == []  # none of them ran
    assert len(lines_json(engine, good)) == len(lines_json(engine, after)) == 3


# --- the invariant, over fuzzed envelopes -------------------------------------------------------

ACTORS = ["subscription_event", "invoice_created", "reconcile_subscription", "no_such_actor"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def envelopes(draw: st.DrawFn, namespace: str) -> tuple[str, str, dict[str, Any], bool]:
    """(the queue it is pushed on, its Redis id, the message, whether it is left untouched)."""
    redis_id = str(uuid.uuid4())
    queue = draw(st.sampled_from([QUEUE_NAME, QUEUE_NAME, QUEUE_NAME, DELAY_QUEUE]))
    message = raw_message([event(namespace)], queue_name=queue, message_id=redis_id)
    message["options"] = {"redis_message_id": redis_id}
    if queue == DELAY_QUEUE:
        message["options"]["eta"] = now_ms()
    clean = draw(st.booleans())
    if clean:
        return queue, redis_id, message, True
    soon = st.integers(now_ms() - 1000, now_ms() + 300)
    field = st.sampled_from(sorted(message))
    mutations = {
        "queue_name": st.sampled_from([QUEUE_NAME, DELAY_QUEUE, f"{QUEUE_NAME}.XQ", "default", ""]) | json_values,
        "actor_name": st.sampled_from(ACTORS) | json_values,
        "args": st.sampled_from([[], [event(namespace)] * 2, ["x"]]) | json_values,
        "kwargs": st.just({"event": event(namespace)}) | json_values,
        "options": st.dictionaries(
            st.sampled_from(["retries", "eta", "traceback", "max_retries", "throws", "pipe_target", "colour"]),
            st.integers(-2, 5) | soon | st.integers(now_ms() + 10 * YEAR_MS, 2**63) | json_values,
            max_size=3,
        ).map(lambda extra: {"redis_message_id": redis_id, **extra}),
        "message_id": st.sampled_from(["", "a\nb", "x" * 300]).map(lambda s: s + redis_id[:0]) | json_values,
        "message_timestamp": st.sampled_from([-1, 0, 1e300, float("nan"), float("inf")]) | json_values,
    }
    for name in draw(st.lists(field, min_size=1, max_size=3, unique=True)):
        message[name] = draw(mutations[name])
    if draw(st.booleans()):
        message[draw(st.sampled_from(["extra", "priority"]))] = draw(json_values)
    return queue, redis_id, message, False


def test_every_fuzzed_envelope_is_handled_or_dead_lettered_exactly_once_and_no_thread_dies(
    engine: Engine, database_url: str, redis_url: str, broker: RedisBroker, broker_namespace: str, processes: Processes
) -> None:
    fuzzed, after = seeded(engine, "fuzzed"), seeded(engine, "after")
    env = worker_env(database_url, redis_url, broker_namespace, SUBSYNC_INVOICE_AFTER_SYNC="false")
    worker = processes.worker(env, threads=2)
    pid = worker_pid(worker)
    threads_before = thread_count(pid)
    outcomes: dict[str, str] = {}

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(batch=st.lists(envelopes(fuzzed), min_size=1, max_size=5))
    def each_message_ends_once(batch: list[tuple[str, str, dict[str, Any], bool]]) -> None:
        for queue, redis_id, message, _ in batch:
            enqueue_raw(broker, json.dumps(message).encode(), redis_id=redis_id, queue_name=queue)

        def ends_logged() -> bool:
            # The worker process's log lines reach the file through the `dramatiq` parent's log pipe, so a
            # message may leave the queue a moment before its line is written: wait for both.
            events = worker.events()
            done = [e.get("message_id") for e in events if e.get("event") == "message.done"]
            lettered = [e.get("redis_message_id") for e in events if e.get("event") == "message.dead_lettered"]
            return all(m["message_id"] in done or r in lettered for _, r, m, _ in batch)  # ids may be any JSON

        wait_until(
            lambda: alive(worker) and pending(broker) == 0 and ends_logged(),
            "the batch to leave the queue and its end lines to be logged",
            20,
            on_timeout=worker.tail,
        )
        dead = {letter.id for letter in list_dead_letters(broker, limit=1000)}
        events = worker.events()
        for _, redis_id, message, clean in batch:
            done = [
                e for e in events if e.get("event") == "message.done" and e.get("message_id") == message["message_id"]
            ]
            lettered = [
                e for e in events if e.get("event") == "message.dead_lettered" and e.get("redis_message_id") == redis_id
            ]
            ends = len(done) + len(lettered)
            assert ends == 1, (message, done, lettered)
            assert (redis_id in dead) == bool(lettered), message
            assert not clean or done, message  # an untouched message is handled
            outcomes[redis_id] = "handled" if done else "dead-lettered"

    each_message_ends_once()
    send_valid(broker, worker, after)
    assert thread_count(pid) == threads_before
    assert "Unhandled error" not in worker.log() and "unexpected error" not in worker.log()
    assert {"handled", "dead-lettered"} <= set(outcomes.values())
