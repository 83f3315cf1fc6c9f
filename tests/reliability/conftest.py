"""Fixtures of the process-level reliability tests: a collector of subprocesses (killed at teardown)
and a Redis key namespace of their own on the test Redis (its keys deleted at teardown)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.redis import RedisBroker

from tests.builders import delete_redis_namespace, unique
from tests.reliability.processes import Processes
from worker.config import Settings
from worker.queue.broker import build_broker


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    collector = Processes(tmp_path)
    try:
        yield collector
    finally:
        collector.close()


@pytest.fixture
def broker_namespace(redis_url: str) -> Iterator[str]:
    namespace = unique("subsync-rel")
    yield namespace
    broker = build_broker(redis_url, Settings(broker_namespace=namespace))
    try:
        delete_redis_namespace(broker.client, namespace)
    finally:
        broker.close()


@pytest.fixture
def broker(redis_url: str, broker_namespace: str) -> Iterator[RedisBroker]:
    """A producer-side broker on the test namespace (what `publish` sends through)."""
    producer = build_broker(redis_url, Settings(broker_namespace=broker_namespace))
    yield producer
    producer.close()
