"""`run_transaction` without `pool_pre_ping`: a stale pooled connection is replaced once; a connection lost
in the middle of a transaction is not retried here (the queue classifies and retries the message)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from worker.store.db import is_stale, make_engine, run_transaction


@pytest.fixture
def one_connection(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def backend_pid(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(engine: Engine, pid: int) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        # pg_terminate_backend only signals: wait (on the server) until the backend is gone (a fresh snapshot
        # of pg_stat_activity each turn: it is cached for the transaction otherwise), 30 s at most: never a hang)
        conn.execute(
            text(
                "DO $$ DECLARE turns int := 0; BEGIN WHILE turns < 3000 AND EXISTS "
                f"(SELECT 1 FROM pg_stat_activity WHERE pid = {int(pid)}) LOOP PERFORM pg_sleep(0.01); "
                "PERFORM pg_stat_clear_snapshot(); turns := turns + 1; END LOOP; END $$"
            )
        )


def test_a_stale_pooled_connection_is_replaced_once(one_connection: Engine, engine: Engine) -> None:
    with one_connection.connect() as conn:
        stale = backend_pid(conn)
    terminate(engine, stale)  # killed while idle in the pool (a server restart, an idle timeout)
    attempts: list[int] = []

    def work(conn: Connection) -> int:
        attempts.append(1)
        return backend_pid(conn)

    assert run_transaction(one_connection, work) != stale
    assert len(attempts) == 2


def test_a_connection_lost_mid_transaction_is_not_retried(one_connection: Engine, engine: Engine) -> None:
    attempts: list[int] = []

    def work(conn: Connection) -> None:
        attempts.append(1)
        terminate(engine, backend_pid(conn))  # after a statement of this transaction succeeded
        conn.execute(text("SELECT 1"))

    with pytest.raises(DBAPIError) as info:
        run_transaction(one_connection, work)
    assert info.value.connection_invalidated and not is_stale(info.value)
    assert len(attempts) == 1
