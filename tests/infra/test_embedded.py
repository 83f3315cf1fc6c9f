"""Embedded servers: started once, reused by later calls and other processes, safe to start concurrently."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from worker.infra import embedded
from worker.store.db import make_engine


def _in_subprocess(code: str, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SUBSYNC_LOG_FORMAT": "json"},
    )


@pytest.fixture
def redis_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    embedded.stop_redis(home)


def test_redis_starts_once_and_is_reused_across_processes(redis_home: Path) -> None:
    url = embedded.ensure_redis(redis_home)
    assert url == f"unix://{redis_home.resolve()}/redis/redis.sock"
    client = redis.Redis.from_url(url)
    try:
        client.set("k", "v")
        pid = int((redis_home / "redis" / "redis.pid").read_text())
        assert embedded.ensure_redis(redis_home) == url
        code = "import sys; from pathlib import Path; from worker.infra.embedded import ensure_redis; print(ensure_redis(Path(sys.argv[1])))"
        child = _in_subprocess(code, redis_home)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert out.strip() == url
        assert int((redis_home / "redis" / "redis.pid").read_text()) == pid
        assert client.get("k") == b"v"  # same server, data kept
    finally:
        client.close()
    assert embedded.stop_redis(redis_home)
    assert not embedded.redis_ping(redis_home / "redis" / "redis.sock")
    assert not embedded.stop_redis(redis_home)


def test_redis_restarts_after_a_stale_pidfile(redis_home: Path) -> None:
    directory = redis_home / "redis"
    directory.mkdir(parents=True)
    (directory / "redis.pid").write_text("999999999\n")
    (directory / "redis.sock").write_text("not a socket")
    url = embedded.ensure_redis(redis_home)
    assert redis.Redis.from_url(url).ping()


def test_long_home_paths_get_a_short_socket(tmp_path: Path) -> None:
    home = tmp_path / ("x" * 120)
    sock = embedded.redis_socket_path(home)
    assert len(str(sock)) <= 100
    assert sock == embedded.redis_socket_path(home)  # stable, so later processes find it
    try:
        assert redis.Redis.from_url(embedded.ensure_redis(home)).ping()
    finally:
        embedded.stop_redis(home)


@pytest.mark.slow
def test_postgres_concurrent_first_start_and_reuse(tmp_path: Path) -> None:
    home = tmp_path / "pg-home"
    code = (
        "import sys; from pathlib import Path; from worker.infra.embedded import ensure_postgres; "
        "print(ensure_postgres(Path(sys.argv[1])))"
    )
    try:
        children = [_in_subprocess(code, home) for _ in range(2)]
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=180)
            assert child.returncode == 0, err
            outputs.append(out.strip())
        assert outputs[0] == outputs[1]
        url = outputs[0]
        assert url.startswith("postgresql+psycopg://postgres@/subsync?host=")
        assert embedded.ensure_postgres(home) == url  # reused in this process too

        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT current_database()").scalar_one() == "subsync"
        finally:
            engine.dispose()
    finally:
        embedded.stop_postgres(home)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=2)


def _subsync(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A `subsync` command on the embedded Postgres under `home` (no DATABASE_URL), as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(SUBSYNC_HOME=str(home), SUBSYNC_LOG_FORMAT="json")
    return subprocess.run(
        [sys.executable, "-m", "worker", *args, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )


def _upsert(home: Path, customer_id: str) -> dict[str, str]:
    result = _subsync(home, "customers", "upsert", "--namespace", "acme", "--id", customer_id)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.slow
def test_postgres_starts_in_a_home_whose_path_has_spaces(tmp_path: Path) -> None:
    home = tmp_path / "my documents" / "sub sync"
    try:
        first = _upsert(home, "c1")
        assert _upsert(home, "c1")["created_at"] == first["created_at"]  # the same server and database
        pgdata = home / "postgres"
        assert _postmaster_pid(pgdata) > 0
    finally:
        embedded.stop_postgres(home)


@pytest.mark.slow
def test_a_stale_postmaster_pid_naming_an_unrelated_process_is_recovered(tmp_path: Path) -> None:
    home = tmp_path / "home"
    pgdata = home / "postgres"
    # An unrelated live process, as after a reboot when the PID of the killed server went to another one.
    unrelated = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        first = _upsert(home, "c1")
        server = _postmaster_pid(pgdata)
        os.kill(server, signal.SIGKILL)  # kill -9: postmaster.pid and the socket lock stay behind
        socket_dir = Path((pgdata / "postmaster.pid").read_text().splitlines()[4].strip())
        for lock in (pgdata / "postmaster.pid", socket_dir / ".s.PGSQL.5432.lock"):
            lines = lock.read_text().splitlines()
            lock.write_text("\n".join([str(unrelated.pid), *lines[1:]]) + "\n")

        again = _upsert(home, "c1")  # no manual clean-up: the next command recovers by itself
        assert again["created_at"] == first["created_at"]
        assert _postmaster_pid(pgdata) not in (server, unrelated.pid)
        assert unrelated.poll() is None  # the unrelated process was left alone
    finally:
        unrelated.kill()
        unrelated.wait()
        embedded.stop_postgres(home)


def _postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
