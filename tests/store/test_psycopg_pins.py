"""worker.store.psycopg_pins: the psycopg internal it changes is still there and still does what the module says."""

from __future__ import annotations

import inspect

from psycopg import _queries
from sqlalchemy import Engine

from worker.store.db import execute_on_cursor
from worker.store.psycopg_pins import STATEMENT_CACHE_LENGTH, cache_long_statements
from worker.store.snapshot import _READ_WITH_CHARGE_HEADS_DIGESTED


def test_the_internal_is_there_and_decides_what_psycopg_caches() -> None:
    assert isinstance(_queries.MAX_CACHED_STATEMENT_LENGTH, int)
    assert "MAX_CACHED_STATEMENT_LENGTH" in inspect.getsource(_queries.PostgresQuery.convert)
    assert _queries._query2pg.cache_info().maxsize  # an LRU cache, bounded


def test_a_statement_as_long_as_a_syncs_read_is_converted_once(db: Engine) -> None:
    cache_long_statements()  # as make_engine does
    assert _queries.MAX_CACHED_STATEMENT_LENGTH >= STATEMENT_CACHE_LENGTH
    longest = len(str(_READ_WITH_CHARGE_HEADS_DIGESTED))
    assert 4_096 < longest < STATEMENT_CACHE_LENGTH  # the sync's longest read, which psycopg left out before
    padding = " " * (longest - 30)
    sql = f"SELECT %(a)s::int + 1 AS v{padding}"
    with db.connect() as conn:
        before = _queries._query2pg.cache_info()
        first = execute_on_cursor(conn, sql, {"a": 1})
        second = execute_on_cursor(conn, sql, {"a": 2})
        after = _queries._query2pg.cache_info()
    assert (first[0].v, second[0].v) == (2, 3)
    assert after.misses - before.misses == 1 and after.hits - before.hits == 1
