"""The one module that touches psycopg's private internals, pinned by the lock file (requirements/*.txt) and checked
by `tests/store/test_psycopg_pins.py`, which fails loudly when the internal changes upstream.

- **The statement conversion cache.** At every execution psycopg turns a query's `%(name)s` placeholders into
  `$n` (`psycopg._queries.PostgresQuery.convert`) and keeps the result in an LRU cache only for queries of at most
  `MAX_CACHED_STATEMENT_LENGTH` (4,096) characters, against ORMs' one-off giant statements. This project's
  statements are module constants, and a credit-mode sync's one read is ~8,400 characters
  (worker.store.snapshot): converted again at every sync, ~29 µs of Python each time. `cache_long_statements`
  raises the limit to `STATEMENT_CACHE_LENGTH` for the process (docs/performance.md "COMMIT in the write's round
  trip, and small cuts per row"). The cache keeps its size (128 entries), so at most a few MB.
"""

from __future__ import annotations

from psycopg import _queries

#: The longest statement psycopg keeps converted (a sync's longest read, with its digest, is under 10,000).
STATEMENT_CACHE_LENGTH = 16_384


def cache_long_statements() -> None:
    """Let psycopg cache the conversion of statements up to `STATEMENT_CACHE_LENGTH` characters (idempotent)."""
    current = getattr(_queries, "MAX_CACHED_STATEMENT_LENGTH", None)
    if not isinstance(current, int):
        raise RuntimeError("psycopg._queries.MAX_CACHED_STATEMENT_LENGTH is gone: see worker/store/psycopg_pins.py")
    _queries.MAX_CACHED_STATEMENT_LENGTH = max(current, STATEMENT_CACHE_LENGTH)
