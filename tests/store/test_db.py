"""`run_transaction` without `pool_pre_ping`: a stale pooled connection is replaced once; a connection lost
in the middle of a transaction is not retried here (the queue classifies and retries the message)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, Engine, bindparam, case, event, literal, select, text, true
from sqlalchemy.exc import DBAPIError, IntegrityError

from worker.store.db import execute_on_cursor, is_stale, make_engine, run_transaction


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


def pid_on_cursor(conn: Connection) -> int:
    return int(execute_on_cursor(conn, "SELECT pg_backend_pid() AS pid", {})[0].pid)


# The same guarantees whether a statement goes through `Connection.execute` or, like a sync's first statement,
# through `execute_on_cursor` on the psycopg cursor.
PID: dict[str, Callable[[Connection], int]] = {"execute": backend_pid, "on_cursor": pid_on_cursor}
SELECT_1: dict[str, Callable[[Connection], object]] = {
    "execute": lambda conn: conn.execute(text("SELECT 1")),
    "on_cursor": lambda conn: execute_on_cursor(conn, "SELECT 1 AS one", {}),
}


@pytest.mark.parametrize("how", sorted(PID))
def test_a_stale_pooled_connection_is_replaced_once(one_connection: Engine, engine: Engine, how: str) -> None:
    with one_connection.connect() as conn:
        stale = backend_pid(conn)
    terminate(engine, stale)  # killed while idle in the pool (a server restart, an idle timeout)
    attempts: list[int] = []

    def work(conn: Connection) -> int:
        attempts.append(1)
        return PID[how](conn)

    assert run_transaction(one_connection, work) != stale
    assert len(attempts) == 2


@pytest.mark.parametrize("how", sorted(PID))
def test_a_connection_lost_mid_transaction_is_not_retried(one_connection: Engine, engine: Engine, how: str) -> None:
    attempts: list[int] = []

    def work(conn: Connection) -> None:
        attempts.append(1)
        terminate(engine, PID[how](conn))  # after a statement of this transaction succeeded
        SELECT_1[how](conn)

    with pytest.raises(DBAPIError) as info:
        run_transaction(one_connection, work)
    assert info.value.connection_invalidated and not is_stale(info.value)
    assert len(attempts) == 1


def test_statements_on_the_psycopg_cursor_behave_like_connection_execute(one_connection: Engine) -> None:
    """Listeners see them (statement counts, captured SQL); errors are SQLAlchemy's, of the matching class; the
    statement belongs to the surrounding transaction."""
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((statement, parameters))

    event.listen(one_connection, "before_cursor_execute", capture)
    try:
        with one_connection.connect() as conn:
            conn.execute(text("CREATE TEMP TABLE t (k int PRIMARY KEY) ON COMMIT DROP"))
            execute_on_cursor(conn, "INSERT INTO t VALUES (%(k)s)", {"k": 1}, rows=False)
            rows = execute_on_cursor(conn, "SELECT k, k + 1 AS next FROM t", {})
            assert [(r.k, r.next) for r in rows] == [(1, 2)]
            with pytest.raises(IntegrityError) as info:
                execute_on_cursor(conn, "INSERT INTO t VALUES (%(k)s)", {"k": 1}, rows=False)
            assert not info.value.connection_invalidated
            assert info.value.orig is not None and info.value.orig.sqlstate == "23505"
            conn.rollback()
    finally:
        event.remove(one_connection, "before_cursor_execute", capture)
    assert ("INSERT INTO t VALUES (%(k)s)", {"k": 1}) in seen
    assert ("SELECT k, k + 1 AS next FROM t", {}) in seen


def test_a_core_statement_on_the_psycopg_cursor_binds_its_own_literals(one_connection: Engine) -> None:
    """A Core statement's constants are bound parameters of its own (`param_1`): they are sent with the caller's."""
    statement = select(
        case((bindparam("flag") == true(), literal("yes")), else_=literal("no")).label("answer"),
        literal(7).label("seven"),
    )
    with one_connection.connect() as conn:
        rows = execute_on_cursor(conn, statement, {"flag": True})
        rows += execute_on_cursor(conn, statement, {"flag": False})
    assert [(r.answer, r.seven) for r in rows] == [("yes", 7), ("no", 7)]
