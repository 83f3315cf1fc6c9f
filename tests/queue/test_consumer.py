"""The Dramatiq internals that `worker/queue/consumer.py` copies or relies on, pinned: when a Dramatiq
upgrade changes any of them, these fail loudly and the consumer must be re-read against the new code
(then update the pins here and the version range of `dramatiq` in pyproject.toml)."""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path

import dramatiq
import dramatiq.brokers.redis as dramatiq_redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff

from worker.config import Settings
from worker.contract.events import QUEUE_NAME
from worker.queue.broker import build_middleware
from worker.queue.consumer import POLICY_OPTIONS, GuardedRedisBroker, GuardedRedisConsumer
from worker.queue.keys import in_flight_key

#: sha256 of the source of `_RedisConsumer.__next__` in Dramatiq 2.2, whose loop
#: `GuardedRedisConsumer.__next__` re-implements.
NEXT_SOURCE_SHA256 = "b8245bc4ab8044d67d72216baca5e5be0d07fccce15c443a5887b6397c9906e1"


def test_dramatiq_is_the_pinned_minor_version() -> None:
    assert dramatiq.__version__.startswith("2.2."), dramatiq.__version__


def test_the_copied_consumer_loop_is_unchanged_upstream() -> None:
    source = inspect.getsource(_RedisConsumer.__next__)
    assert hashlib.sha256(source.encode()).hexdigest() == NEXT_SOURCE_SHA256, (
        "dramatiq's _RedisConsumer.__next__ changed: re-read worker/queue/consumer.py against it"
    )


def test_the_consumer_attributes_it_relies_on_are_set_by_dramatiq() -> None:
    assert list(inspect.signature(_RedisConsumer.__init__).parameters) == [
        "self",
        "broker",
        "queue_name",
        "prefetch",
        "timeout",
    ]
    init = inspect.getsource(_RedisConsumer.__init__)
    for attribute in ("message_cache", "queued_message_ids", "misses", "prefetch", "timeout", "queue_name"):
        assert f"self.{attribute} =" in init, attribute
    assert isinstance(inspect.getattr_static(_RedisConsumer, "outstanding_message_count"), property)
    assert list(inspect.signature(compute_backoff).parameters)[:1] == ["attempts"]
    # `broker.do_<command>` runs a command of the dispatch script
    assert 'command = name[len("do_") :]' in inspect.getsource(RedisBroker.__getattr__)
    assert issubclass(GuardedRedisConsumer, _RedisConsumer) and issubclass(GuardedRedisBroker, RedisBroker)
    # the broker builds its consumers through `consumer_class`, which GuardedRedisBroker overrides
    assert "self.consumer_class(self, queue_name, prefetch, timeout)" in inspect.getsource(RedisBroker.consume)
    assert list(inspect.signature(RedisBroker.consume).parameters) == ["self", "queue_name", "prefetch", "timeout"]


def test_the_dispatch_script_has_the_commands_and_in_flight_layout_relied_on() -> None:
    dispatch = (Path(dramatiq_redis.__file__).parent / "redis" / "dispatch.lua").read_text()
    for command in ("fetch", "nack", "requeue"):
        assert f'command == "{command}"' in dispatch, command
    assert 'namespace .. ":__acks__." .. worker_id' in dispatch
    # `fetch_with_ids` is appended to the script: the locals it uses, and a chain that returns only
    # from the branch of a known command
    for local in ("queue_full_name", "queue_messages", "queue_acks", "max_unpack_size", "ARGS"):
        assert f"local {local} =" in dispatch, local
    assert dispatch.rstrip().endswith("end") and 'command == "subsync_fetch"' not in dispatch
    assert 'dispatch = self.scripts["dispatch"]' in inspect.getsource(RedisBroker._dispatch)
    assert in_flight_key("ns", "w1", "q") == "ns:__acks__.w1.q"


#: The options the consumer accepts, each checked for its type (`_option_problem`).
ACCEPTED_OPTIONS = {"redis_message_id", "retries", "eta", "traceback", "requeue_timestamp"}


def test_every_message_option_dramatiq_reads_is_checked_or_refused_by_the_consumer() -> None:
    """A message option Dramatiq (or its middleware) reads, and the consumer would let through
    unchecked, could again kill a worker thread or lose the message (docs/operations.md §8)."""
    source = "\n".join(path.read_text() for path in Path(dramatiq.__file__).parent.rglob("*.py"))
    read = set(re.findall(r'options(?:\.get|\.setdefault|\.pop)?[\[(]"(\w+)"', source))
    read |= set(re.findall(r'"(\w+)" in (?:message|self)\.options', source))
    for middleware in build_middleware(Settings()):
        read |= set(middleware.actor_options)
    assert {"retries", "eta", "max_retries", "pipe_target", "time_limit"} <= read  # the scan finds them
    unchecked = read - ACCEPTED_OPTIONS - POLICY_OPTIONS - {"actor", "abstract"}
    assert not unchecked, (
        f"options Dramatiq reads that worker/queue/consumer.py neither checks nor refuses: {unchecked}"
    )


def test_the_enqueue_command_of_the_dispatch_script_is_what_enqueue_many_does() -> None:
    """`GuardedRedisBroker.enqueue_many` writes a queue as the dispatch script's `enqueue` does."""
    dispatch = (Path(dramatiq_redis.__file__).parent / "redis" / "dispatch.lua").read_text()
    enqueue = dispatch.split('command == "enqueue"', 1)[1].split("elseif", 1)[0]
    assert 'redis.call("hset", queue_messages, message_id, message_data)' in enqueue
    assert 'redis.call("rpush", queue_full_name, message_id)' in enqueue
    assert 'local queue_full_name = namespace .. ":" .. queue_name' in dispatch
    assert 'local queue_messages = queue_full_name .. ".msgs"' in dispatch


def test_enqueue_many_queues_messages_a_consumer_delivers_in_order(redis_broker: RedisBroker) -> None:
    assert isinstance(redis_broker, GuardedRedisBroker)
    messages = [
        dramatiq.Message(queue_name=QUEUE_NAME, actor_name="reconcile_subscription", args=(n,), kwargs={}, options={})
        for n in range(5)
    ]
    sent = redis_broker.enqueue_many(messages)
    assert len({m.options["redis_message_id"] for m in sent}) == 5
    consumer = redis_broker.consume(QUEUE_NAME, prefetch=10, timeout=1000)
    try:
        received = []
        while len(received) < 5:
            proxy = next(consumer)
            if proxy is not None:
                received.append(proxy)
                consumer.ack(proxy)
        assert [p.args for p in received] == [(n,) for n in range(5)]
        assert [p.message_id for p in received] == [m.message_id for m in messages]
    finally:
        consumer.close()
    assert redis_broker.enqueue_many([]) == []
