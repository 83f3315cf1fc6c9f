"""The benchmark's database: a scratch database on the configured server, and a counting engine.

`DATABASE_URL` when set, else the embedded server (`worker.bootstrap.database_url`). The benchmark
never writes to that database itself: it creates `subsync_bench_<pid>_<hex>` next to it, migrates it to
head, and drops it at the end (unless `--keep`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, pool, text
from sqlalchemy.engine import make_url

from bench.wire import CountingProxy
from worker.bootstrap import database_url as resolve_database_url
from worker.config import load_settings
from worker.store import migrations as migrate
from worker.store.db import make_engine, replace_database

#: `worker.store.db.COMMIT`, the COMMIT a sync sends with its write; spelled out here so that the benchmark also
#: measures trees that do not have it (`--compare` runs this benchmark on an older tree).
COMMIT = "COMMIT"
ROWS_WRITTEN = text("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables")


@dataclass(frozen=True, slots=True)
class Counts:
    """What one sync costs in database work."""

    statements: int  # statements the code executes (SQLAlchemy's before_cursor_execute)
    round_trips: int  # client waits on the wire (BEGIN and COMMIT included)
    executions: int  # Query/Execute messages the server runs (an executemany counts every row)
    rows_written: int  # rows inserted, updated or deleted (pg_stat_xact_user_tables at commit)


def server_url() -> str:
    return resolve_database_url(load_settings())


@contextmanager
def scratch_database(url: str, *, keep: bool = False) -> Iterator[str]:
    """A new database on the server of `url`, migrated to head; dropped afterwards unless `keep`."""
    name = f"subsync_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))  # generated name, never user input
        scratch = replace_database(url, name)
        migrate.upgrade(scratch)
        yield scratch
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class CountingEngine:
    """An engine whose connections go through a `CountingProxy`, with statement and row counters.

    Rows written are the change of `pg_stat_xact_user_tables` between the start and the commit of each
    transaction (since Postgres 15 the view also holds earlier transactions' counts that the backend has
    not flushed yet, so one reading is not enough). The two readings cost two queries per transaction;
    `measure` takes them back out of the round trips and executions. A sync sends its COMMIT with its write
    (`worker.store.db.commit_in_pipeline`): the second reading is then taken just before that COMMIT, which,
    like BEGIN, is not counted as a statement."""

    def __init__(self, url: str) -> None:
        probe = make_engine(url, pool_size=1)
        try:
            with probe.connect() as conn:
                info = conn.connection.driver_connection.info  # type: ignore[union-attr]
                host, port = info.host, info.port
        finally:
            probe.dispose()
        self.proxy = CountingProxy(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port))
        parsed = make_url(url)
        query = {k: v for k, v in parsed.query.items() if k not in ("host", "port")}
        query.update(sslmode="disable", gssencmode="disable")
        proxied = parsed.set(host="127.0.0.1", port=self.proxy.port, query=query)
        self.engine = make_engine(proxied.render_as_string(hide_password=False), pool_size=1)
        self._statements = 0
        self._rows = 0
        self._readings = 0
        self._at_begin = 0
        self._read_at_commit = False
        event.listen(self.engine, "before_cursor_execute", self._on_execute)
        event.listen(self.engine, "begin", self._on_begin)
        event.listen(self.engine, "commit", self._on_commit)

    def _on_execute(self, conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if statement == COMMIT:  # the transaction's last moment: its rows written now, not at the commit event
            self._on_commit(conn)
            self._read_at_commit = True
            return
        self._statements += 1

    def _written(self, conn: Connection) -> int:
        self._readings += 1
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(str(ROWS_WRITTEN))
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    def _on_begin(self, conn: Connection) -> None:
        self._at_begin = self._written(conn)
        self._read_at_commit = False

    def _on_commit(self, conn: Connection) -> None:
        if not self._read_at_commit:
            self._rows += self._written(conn) - self._at_begin

    def measure(self, work: Callable[[Engine], object]) -> Counts:
        """Run `work` on the counting engine and return what it cost."""
        self._statements = self._rows = self._readings = 0
        before = self.proxy.counts()
        work(self.engine)
        wire = self.proxy.counts() - before
        return Counts(
            statements=self._statements,
            round_trips=wire.round_trips - self._readings,
            executions=wire.executions - self._readings,
            rows_written=self._rows,
        )

    def close(self) -> None:
        self.engine.dispose()
        self.proxy.close()


def timing_engine(url: str) -> Engine:
    """The engine timings are taken on: the worker's own settings (`worker.store.db.make_engine`)."""
    return make_engine(url, pool_size=2)
