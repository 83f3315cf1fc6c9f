"""Names of the Redis keys the worker reads and writes (Dramatiq's Redis broker layout, plus this
project's own keys; `NS` is the broker namespace). docs/operations.md §3, §5 and §8 describe them."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

from worker.contract.events import QUEUE_NAME


def queue_keys(broker: RedisBroker, queue_name: str = QUEUE_NAME) -> dict[str, str]:
    """Dramatiq's keys of one queue: ready ids, stored messages, delayed and dead-lettered ones."""
    namespace = broker.namespace
    base = f"{namespace}:{queue_name}"
    return {
        "ready": base,
        "messages": f"{base}.msgs",
        "delayed": f"{base}.DQ",
        "delayed_messages": f"{base}.DQ.msgs",
        "dead": f"{base}.XQ",
        "dead_messages": f"{base}.XQ.msgs",
        "heartbeats": f"{namespace}:__heartbeats__",
    }


def in_flight_key(namespace: str, broker_id: str, queue_name: str) -> str:
    """The set of message ids one broker (worker process) has fetched and not yet acknowledged."""
    return f"{namespace}:__acks__.{broker_id}.{queue_name}"


def dead_letter_reason_key(namespace: str, redis_message_id: str) -> str:
    """`NS:subsync.dead-letter-reason:<id>`: why a message was dead-lettered (JSON, same TTL)."""
    return f"{namespace}:subsync.dead-letter-reason:{redis_message_id}"


def reconcile_lock_key(namespace: str) -> str:
    """Held while one `reconcile_due` runs, so that a second one skips."""
    return f"{namespace}:subsync.reconcile-due.lock"


def scheduler_tick_key(namespace: str, interval: float, tick: int) -> str:
    """Claimed by the one scheduler that enqueues `reconcile_due` for a tick."""
    return f"{namespace}:subsync.scheduler.tick:{interval:g}:{tick}"
