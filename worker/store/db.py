"""Database URL resolution and engine creation (SQLAlchemy 2.0 Core, psycopg 3)."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import ClauseElement, Connection, create_engine, event
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Engine, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler

from worker.contract.text import format_decimal, format_time
from worker.domain.timeutil import trunc
from worker.store.psycopg_pins import cache_long_statements

_PSYCOPG_DRIVER = "postgresql+psycopg"
_T = TypeVar("_T")
_USED = "subsync_used"  # in a pooled connection's info: a statement succeeded since its checkout


def normalize_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgres://` / `postgresql://` URLs; leave others alone."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername=_PSYCOPG_DRIVER)
    return parsed.render_as_string(hide_password=False)


def replace_database(url: str, database: str) -> str:
    """The same server URL pointing at another database (used for admin connections and tests)."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@functools.lru_cache(maxsize=16384)
def time_text(t: datetime) -> str:
    """`t` truncated to whole seconds (docs/sync.md §6.3: times are stored so), as ISO 8601 text for a `timestamptz`
    field of the JSON rows a write sends. Memoised: a sync's rows repeat few instants (a period's end is the next
    one's start; service, full and billing periods mostly coincide), and `isoformat` costs ~0.6 µs a call, ~5 µs a
    charge row (docs/performance.md "Rows written with fewer conversions"). Equal instants are one key: any of their texts
    names the same instant."""
    return trunc(t).isoformat()


def json_dumps(value: Any) -> str:
    """JSON for jsonb columns: decimals as shortest strings, times as RFC 3339 UTC."""
    return json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=False)


# The JSON text of one value of a row a write sends, for rows built as text (docs/performance.md "Charge rows as
# JSON text"): each gives what `json_dumps` gives for the value in that row's dictionary.
json_str = json.encoder.encode_basestring  # json's own C encoder of one str: quoted and escaped, not ASCII-only


def json_str_or_null(s: str | None) -> str:
    return "null" if s is None else json_str(s)


# Memoised like `time_text` and `format_decimal` themselves: a row calls these a dozen times with few distinct values,
# and the cache's C lookup is ~0.6 µs a charge row cheaper than a Python call building the text again (measured on
# the 37 charges of a credit first sync: 117 → 95 µs for their rows, docs/performance.md "COMMIT in the write's
# round trip, and small cuts per row").
@functools.lru_cache(maxsize=16384)
def json_time(t: datetime | None) -> str:
    """`time_text(t)` as a JSON string (ISO 8601: nothing to escape), or null."""
    return "null" if t is None else f'"{time_text(t)}"'


@functools.lru_cache(maxsize=4096)
def json_amount(v: Decimal | None) -> str:
    """`format_decimal(v)` as a JSON string (digits, sign and point: nothing to escape), or null. Equal values are
    one key, as they are one text (`format_decimal`)."""
    return "null" if v is None else f'"{format_decimal(v)}"'


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    application_name: str = "subsync",
    **kwargs: Any,
) -> Engine:
    """A pooled engine. Every connection uses `TimeZone=UTC`, so timestamps come back in UTC.

    No `pool_pre_ping` (a round trip on every checkout: docs/operations.md §2):
    `run_transaction` replaces a stale pooled connection instead, when its first statement finds it dead.
    psycopg keeps the conversion of statements as long as the sync's read (worker.store.psycopg_pins)."""
    cache_long_statements()
    created = create_engine(
        normalize_database_url(url),
        pool_pre_ping=False,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        pool_timeout=30,
        json_serializer=json_dumps,
        connect_args={"options": "-c timezone=UTC", "application_name": application_name},
        **kwargs,
    )
    event.listen(created, "after_cursor_execute", _mark_used)
    event.listen(created, "handle_error", _mark_stale)
    event.listen(created, "checkout", _note_checkout)
    event.listen(created, "checkin", _note_checkin)
    return created


# --- cancelling a thread's statement (docs/operations.md §2 "Shutdown") ------------------------------

_THREAD = "subsync_thread"  # in a pooled connection's record info: the thread that checked it out
_checked_out_lock = threading.Lock()
#: The pool records (and their DBAPI connections) each thread has checked out of any engine of this process.
_checked_out: dict[int, dict[int, tuple[Any, Any]]] = {}


def _note_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    ident = threading.get_ident()
    record.info[_THREAD] = ident
    with _checked_out_lock:
        _checked_out.setdefault(ident, {})[id(record)] = (record, dbapi_connection)


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    ident = record.info.pop(_THREAD, None)
    if ident is None:
        return
    with _checked_out_lock:
        held = _checked_out.get(ident)
        if held is not None:
            held.pop(id(record), None)
            if not held:
                del _checked_out[ident]


#: How long one cancel request may take (it opens a connection to the server).
CANCEL_TIMEOUT_SECONDS = 3.0


def cancel_statements(thread_ids: Iterable[int]) -> int:
    """Ask the server to cancel the statement running on each connection these threads have checked
    out (psycopg's `cancel_safe`): a thread blocked in a lock wait or a long query then gets an error
    (SQLSTATE 57014) and its transaction rolls back, instead of ignoring an interrupt until the lock
    times out. Returns how many cancel requests were sent; a connection with no statement running is
    left as it is by the server."""
    with _checked_out_lock:
        connections = [
            connection
            for ident in thread_ids
            for record, connection in _checked_out.get(ident, {}).values()
            # still that thread's, on the same DBAPI connection (an invalidated record may not check in)
            if record.info.get(_THREAD) == ident and record.dbapi_connection is connection
        ]
    sent = 0
    for connection in connections:
        try:
            connection.cancel_safe(timeout=CANCEL_TIMEOUT_SECONDS)  # psycopg >= 3.2
        except Exception:  # a closed connection has nothing to cancel; the interrupt goes on
            continue
        sent += 1
    return sent


def _mark_used(conn: Connection, *_: Any) -> None:
    conn.info[_USED] = True


def _mark_stale(context: ExceptionContext) -> None:
    # Before SQLAlchemy invalidates the connection (which clears its info): was it dead on arrival?
    if context.is_disconnect and context.connection is not None and not context.connection.info.get(_USED):
        setattr(context.sqlalchemy_exception, "subsync_stale", True)  # noqa: B010


def is_stale(exc: BaseException) -> bool:
    """A disconnect raised by the first statement since the connection left the pool."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated and getattr(exc, "subsync_stale", False)


# --- statements on the connection's psycopg cursor (docs/performance.md "Hot statements on the psycopg cursor") --

#: The statement `commit_in_pipeline` sends (listeners that count statements tell it apart by this text).
COMMIT = "COMMIT"

_PSYCOPG_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]
#: Each statement's SQL with `%(name)s` placeholders and the values it binds itself (literals such as a CASE's
#: constants), compiled on its first execution; statements are module constants built once at import, so the
#: key is the object, kept alive by its entry.
_COMPILED: dict[int, tuple[ClauseElement, str, dict[str, Any]]] = {}


def compiled_for_cursor(statement: ClauseElement) -> tuple[str, dict[str, Any]]:
    """`statement`'s SQL for a psycopg cursor (`%(name)s` placeholders) and the values it binds itself, compiled
    once; `execute_on_cursor` sends it with the caller's values over those."""
    found = _COMPILED.get(id(statement))
    if found is None:
        compiled = statement.compile(dialect=_PSYCOPG_DIALECT)
        assert isinstance(compiled, SQLCompiler)
        if compiled.positiontup or "POSTCOMPILE" in compiled.string:  # never: built for `execute_on_cursor`
            raise ValueError("execute_on_cursor takes named, non-expanding parameters only")
        own = {name: bind.effective_value for bind, name in compiled.bind_names.items() if not bind.required}
        found = _COMPILED[id(statement)] = (statement, compiled.string, own)
    return found[1], found[2]


def execute_on_cursor(
    conn: Connection, statement: ClauseElement | str, params: dict[str, Any], *, rows: bool = True
) -> list[Any]:
    """Run `statement` (a Core statement or `text()` whose values are all bound parameters, or SQL with `%(name)s`
    placeholders) in `conn`'s transaction on its psycopg cursor and return its rows as named tuples (`rows=False`:
    none are fetched). For the sync's hot statements: no SQLAlchemy result is built (~0.1 ms of CPU a statement,
    a twentieth of a small steady-state sync), yet it behaves like `Connection.execute` otherwise: the engine's
    cursor-execute listeners see it (statement counts, captured SQL, fault hooks, `run_transaction`'s
    stale-connection test), and a psycopg error is raised as SQLAlchemy's DBAPIError — a disconnect invalidates the
    connection, marked stale when it is the transaction's first statement. Inside `worker.store.write.pipelined`
    it is only queued (`rows=False`)."""
    if isinstance(statement, str):
        sql = statement
    else:
        sql, own = compiled_for_cursor(statement)
        if own:
            params = {**own, **params}
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor(row_factory=namedtuple_row) as cursor:
            for before in conn.dispatch.before_cursor_execute:
                sql, params = before(conn, cursor, sql, params, None, False)
            cursor.execute(sql, params)
            fetched = cursor.fetchall() if rows else []
            conn.dispatch.after_cursor_execute(conn, cursor, sql, params, None, False)
    except psycopg.Error as error:
        raise as_dbapi_error(conn, error) from error
    return fetched


def as_dbapi_error(conn: Connection, error: psycopg.Error) -> DBAPIError:
    """`error`, raised by psycopg on `conn`'s DBAPI connection outside `Connection.execute`, as SQLAlchemy would
    have raised it: the matching DBAPIError subclass; a closed connection is invalidated, and marked stale
    (`is_stale`) when no statement had succeeded on it since its checkout."""
    raw = conn.connection.driver_connection
    closed = bool(raw is None or raw.closed)
    used = bool(conn.info.get(_USED))
    if closed:
        conn.invalidate(error)
    wrapped = DBAPIError.instance(None, None, error, psycopg.Error, connection_invalidated=closed, dialect=conn.dialect)
    assert isinstance(wrapped, DBAPIError)  # `error` is a DBAPI error, never a plain StatementError
    if closed and not used:
        setattr(wrapped, "subsync_stale", True)  # noqa: B010
    return wrapped


def commit_in_pipeline(conn: Connection) -> None:
    """Queue COMMIT in the psycopg pipeline `conn` is in (worker.store.write.pipelined): the transaction ends in
    the pipeline's one round trip, not in one of its own (docs/performance.md "COMMIT in the write's round trip,
    and small cuts per row").
    The transaction block that began it then has nothing to commit (psycopg sends no COMMIT on an idle
    connection); nothing may run on `conn` after it. If a statement queued before fails, the server skips
    everything up to the pipeline's end, this COMMIT included, and the transaction rolls back as ever. Sent like a
    statement (`execute_on_cursor`), so the engine's cursor-execute listeners see the transaction's last moment:
    the benchmark reads a transaction's rows written there (bench.database.CountingEngine)."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    if raw.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF:
        raise RuntimeError("commit_in_pipeline: the connection is not in a pipeline")
    execute_on_cursor(conn, COMMIT, {}, rows=False)


def run_transaction(engine: Engine, work: Callable[[Connection], _T], *, rolled_back: bool = False) -> _T:
    """`work(conn)` in one transaction. A pooled connection can be stale (server restarted, idle connection
    killed): it then fails on the transaction's first statement, before anything was read or written, and
    that attempt is replaced once by one on a new connection. Any other failure, a connection lost in the
    middle of the transaction included, propagates (the queue classifies it `database_unavailable` and
    retries the message: docs/sync.md §8.5 makes the re-run safe).

    `rolled_back`: the transaction is rolled back whatever happens, so nothing `work` writes is kept and its
    transaction-scoped locks are released (previews: docs/sync.md §10.2). `work` may end the transaction with its
    last write (`commit_in_pipeline`, a sync's): the commit at the end of the block then has nothing to send."""
    for attempt in (1, 2):
        try:
            with engine.connect() as conn:
                conn.info.pop(_USED, None)
                if rolled_back:
                    transaction = conn.begin()
                    try:
                        return work(conn)
                    finally:
                        transaction.rollback()
                with conn.begin():
                    return work(conn)
        except DBAPIError as exc:
            if attempt == 2 or not is_stale(exc):
                raise
    raise AssertionError("unreachable")


_K = TypeVar("_K")
_R = TypeVar("_R")


def keyset_pages(
    engine: Engine,
    read_page: Callable[[Connection, _K | None], list[_R]],
    key_of: Callable[[_R], _K],
    page_size: int,
) -> Iterator[list[_R]]:
    """Pages of a keyset-paged read, each in one short read transaction: `read_page(conn, after)` returns at
    most `page_size` rows after the key `after` (None: from the start); the next page starts after the key of
    the last row. Stops at an empty or short page."""
    after: _K | None = None
    while True:
        with engine.connect() as conn:
            page = read_page(conn, after)
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        after = key_of(page[-1])
