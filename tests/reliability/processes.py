"""Real processes for the fault tests: `subsync worker` subprocesses, throwaway Redis servers, and
waiting on them with deadlines (never fixed sleeps).

Every process is started in its own session and registered with a `Processes` collector, whose
fixture teardown kills whatever is still running, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, text

from worker.infra.faults import APPLICATION_NAME_PREFIX
from worker.queue.keys import queue_keys

STARTUP_TIMEOUT = 30.0
WORKER_COMMAND = (sys.executable, "-m", "worker", "worker")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float, *, on_timeout: Callable[[], str] = str
) -> None:
    """Poll `condition` every 20 ms until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")
        time.sleep(0.02)


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the process's whole session (it was started with start_new_session) and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(15)


class WorkerProcess:
    """One `subsync worker` command (Dramatiq's supervisor process and its worker processes)."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines of the worker (other lines are skipped)."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def tail(self) -> str:
        return f"worker log tail:\n{self.log()[-4000:]}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(f"the worker exited with {self.process.returncode}\n{self.tail()}")

    def wait_ready(self, processes: int = 1) -> None:
        def ready() -> bool:
            self.check_alive()
            return self.log().count("worker process ready") >= processes

        wait_until(ready, "the worker to start", STARTUP_TIMEOUT, on_timeout=self.tail)

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        kill_group(self.process)


class RedisServer:
    """A throwaway `redis-server` on a loopback TCP port with its data in `directory`; append-only
    file on and fsynced at every write, so a SIGKILLed server restarts with every acknowledged write."""

    def __init__(self, directory: Path, port: int | None = None, password: str | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @staticmethod
    def executable() -> str:
        found = shutil.which("redis-server")
        if found:
            return found
        from worker.infra.embedded import redis_server_executable

        return os.fspath(redis_server_executable())

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            self.executable(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", os.fspath(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--protected-mode", "yes",
            *(["--requirepass", self.password] if self.password else []),
        ]  # fmt: skip
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        wait_until(self.ping, f"redis-server on port {self.port}", STARTUP_TIMEOUT)

    def ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.process.returncode}")
        try:
            client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5, socket_timeout=0.5)
            return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None


class Processes:
    """Starts workers and servers for one test and kills every one of them at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.workers: list[WorkerProcess] = []
        self.servers: list[RedisServer] = []

    def worker(
        self,
        env: dict[str, str],
        *,
        processes: int = 1,
        threads: int = 4,
        name: str = "worker",
        metrics_port: int = 0,
        args: tuple[str, ...] = (),
    ) -> WorkerProcess:
        """A `subsync worker`; with a `metrics_port`, serving metrics and health on 127.0.0.1 there."""
        log_path = self.tmp_path / f"{name}-{len(self.workers)}.log"
        full_env = {**os.environ, **env}
        for key in ("PROMETHEUS_MULTIPROC_DIR", "SUBSYNC_METRICS_DIR", "dramatiq_prom_db"):
            full_env.pop(key, None)
        if metrics_port:
            full_env["SUBSYNC_METRICS_DIR"] = str(self.tmp_path / f"{name}-{len(self.workers)}-metrics")
            full_env["SUBSYNC_METRICS_HOST"] = "127.0.0.1"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    *WORKER_COMMAND,
                    "--processes",
                    str(processes),
                    "--threads",
                    str(threads),
                    "--metrics-port",
                    str(metrics_port),
                    *args,
                ],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(process, log_path)
        self.workers.append(worker)
        worker.wait_ready(processes)
        return worker

    def redis(self, name: str = "redis", password: str | None = None) -> RedisServer:
        server = RedisServer(self.tmp_path / name, password=password)
        self.servers.append(server)
        server.start()
        return server

    def close(self) -> None:
        for worker in self.workers:  # all at once: each takes a second or two to shut down
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.process.pid, signal.SIGTERM)
        for worker in self.workers:
            worker.stop()
        for server in self.servers:
            server.kill()


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of `GET http://127.0.0.1:<port><path>`; (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def worker_env(database_url: str, redis_url: str, broker_namespace: str, **extra: str) -> dict[str, str]:
    """Environment of a test worker: quick retries, quick consumer restarts, JSON logs."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SUBSYNC_BROKER_NAMESPACE": broker_namespace,
        "SUBSYNC_LOG_FORMAT": "json",
        "SUBSYNC_MIN_BACKOFF_MS": "100",
        "SUBSYNC_MAX_BACKOFF_MS": "500",
        "SUBSYNC_TRANSIENT_MAX_RETRIES": "5",
        "SUBSYNC_DOMAIN_MAX_RETRIES": "1",
        "SUBSYNC_SHUTDOWN_GRACE_SECONDS": "2",
        "dramatiq_restart_delay": "200",
        **extra,
    }


def pending(broker: RedisBroker) -> int:
    """Messages not yet acknowledged or dead-lettered: ready, in flight, or waiting for a retry."""
    keys = queue_keys(broker)
    pipe = broker.client.pipeline(transaction=True)
    pipe.hlen(keys["messages"])
    pipe.hlen(keys["delayed_messages"])
    return sum(int(n) for n in pipe.execute())


def drain(broker: RedisBroker, workers: list[WorkerProcess], timeout: float) -> None:
    def drained() -> bool:
        for worker in workers:
            worker.check_alive()
        return pending(broker) == 0

    wait_until(drained, "the queue to drain", timeout, on_timeout=lambda: "\n".join(w.tail() for w in workers))


# --- the blocked sync of worker.infra.faults ----------------------------------------------------------


class AdvisoryLock:
    """A session-level advisory lock held by the test on its own connection: while held, a worker
    with `SUBSYNC_FAULT_BLOCK_AFTER_WRITE=<key>` blocks inside its sync transaction after writing."""

    def __init__(self, engine: Engine, key: int) -> None:
        self.engine = engine
        self.key = key
        self.conn = engine.connect()
        self.conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        self.conn.commit()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self.conn.commit()
            self.held = False

    def close(self) -> None:
        try:
            self.release()
        finally:
            self.conn.close()


def blocked_backends(engine: Engine) -> list[dict[str, Any]]:
    """Backends of this database stuck in the fault hook: waiting for a lock, inside a transaction
    that has written (it has a transaction id)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid, application_name, backend_xid IS NOT NULL AS wrote FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND starts_with(application_name, :prefix)"
            ),
            {"prefix": APPLICATION_NAME_PREFIX},
        ).all()
    return [
        {"backend_pid": r.pid, "worker_pid": int(r.application_name[len(APPLICATION_NAME_PREFIX) :]), "wrote": r.wrote}
        for r in rows
    ]


def backend_exists(engine: Engine, backend_pid: int) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend_pid}).scalar()
        )
