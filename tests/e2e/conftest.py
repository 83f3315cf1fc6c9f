"""A real worker process (`subsync worker`) against the test database and the real Redis.

The worker runs for the whole test module on its own Redis key namespace (`SUBSYNC_BROKER_NAMESPACE`),
so nothing else in the Redis database is touched; its keys are deleted at the end. Tests wait for
completion by polling the queue (ready, in-flight and delayed messages) with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.redis import RedisBroker

from tests.builders import delete_redis_namespace, unique
from worker.config import Settings
from worker.queue.broker import build_broker
from worker.queue.keys import queue_keys

STARTUP_TIMEOUT = 30.0
DRAIN_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, broker: RedisBroker, metrics_port: int):
        self.process = process
        self.log_path = log_path
        self.broker = broker
        self.metrics_port = metrics_port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = DRAIN_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; worker log tail:\n{self.log()[-4000:]}")
            time.sleep(0.02)

    def pending(self) -> int:
        """Messages not yet acknowledged: ready or in flight, and retries waiting for their backoff."""
        keys = queue_keys(self.broker)
        pipe = self.broker.client.pipeline(transaction=True)
        pipe.hlen(keys["messages"])
        pipe.hlen(keys["delayed_messages"])
        return sum(int(n) for n in pipe.execute())

    def drain(self) -> None:
        self.wait_for(lambda: self.pending() == 0, "the queue to drain")


@pytest.fixture(scope="module")
def e2e_broker_namespace(redis_url: str) -> Iterator[str]:
    namespace = unique("subsync-e2e")
    yield namespace
    broker = build_broker(redis_url, Settings(broker_namespace=namespace))
    try:
        delete_redis_namespace(broker.client, namespace)
    finally:
        broker.close()


@pytest.fixture(scope="module")
def worker_process(
    database_url: str, redis_url: str, e2e_broker_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    metrics_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SUBSYNC_BROKER_NAMESPACE": e2e_broker_namespace,
        "SUBSYNC_LOG_FORMAT": "json",
        "SUBSYNC_MIN_BACKOFF_MS": "50",
        "SUBSYNC_MAX_BACKOFF_MS": "200",
        "SUBSYNC_DOMAIN_MAX_RETRIES": "1",
        "SUBSYNC_TRANSIENT_MAX_RETRIES": "3",
        "SUBSYNC_SHUTDOWN_GRACE_SECONDS": "2",
        "SUBSYNC_METRICS_HOST": "127.0.0.1",
        "dramatiq_restart_delay": "200",
    }
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env["SUBSYNC_METRICS_DIR"] = str(tmp_path_factory.mktemp("metrics"))
    settings = Settings(broker_namespace=e2e_broker_namespace)
    broker = build_broker(redis_url, settings)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker",
                "worker",
                "--processes",
                "1",
                "--threads",
                "2",
                "--metrics-port",
                str(metrics_port),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(process, log_path, broker, metrics_port)
    try:
        worker.wait_for(lambda: "worker process ready" in worker.log(), "the worker to start", STARTUP_TIMEOUT)
        yield worker
    finally:
        stop(process)
        broker.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def worker(worker_process: WorkerProcess) -> WorkerProcess:
    worker_process.check_alive()
    return worker_process
