"""One run at a time across worker processes: a Redis key held, with a token and a time to live, while a
run lasts (`reconcile_due`, docs/sync.md §8.4)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dramatiq
from dramatiq.brokers.redis import RedisBroker

# Deletes the key only if it still holds this run's token (an expired lock taken by another run stays).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@contextmanager
def run_lock(broker: dramatiq.Broker, key: Callable[[str], str], ttl_ms: int) -> Iterator[bool]:
    """Hold `key(broker namespace)` for the block: yields True when this run holds it, False (holding
    nothing) when another run does. The lock expires after `ttl_ms` should its holder die. A broker
    without Redis (the tests' StubBroker) has no other process to exclude: yields True."""
    if not isinstance(broker, RedisBroker):
        yield True
        return
    lock_key, token = key(broker.namespace), uuid.uuid4().hex
    if not broker.client.set(lock_key, token, nx=True, px=ttl_ms):
        yield False
        return
    try:
        yield True
    finally:
        broker.client.eval(_RELEASE, 1, lock_key, token)
