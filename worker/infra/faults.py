"""Fault injection for the reliability tests. Off unless `SUBSYNC_FAULT_BLOCK_AFTER_WRITE` is set
(`Settings.fault_block_after_write`; `worker.bootstrap` installs the hook); never set it in production.

`SUBSYNC_FAULT_BLOCK_AFTER_WRITE=<key>` (a positive integer): every transaction of the worker's
engine that writes `invoice_lines` then waits for the Postgres advisory lock `<key>`
(`pg_advisory_xact_lock`) right after that write, i.e. for as long as a test holds that lock. The
sync is then stuck *inside* its transaction with its writes made and not committed, for as long as
the test needs to kill the worker, terminate its connection or restart a server. Before waiting,
the transaction sets its `application_name` to `subsync-fault:<os pid>` (transaction-local), so the
test finds the blocked backend in `pg_stat_activity` and the worker process by its pid.

The lock is re-entrant within the transaction, so later writes of the same transaction pass. The hook waits for
the lock client-side too (it fetches the lock's result): inside the sync's write pipeline, which also carries the
transaction's COMMIT (worker.store.write), nothing after the write reaches the server while the test holds the lock.
"""

from __future__ import annotations

import os
import re
from typing import Any

from sqlalchemy import Engine, event

APPLICATION_NAME_PREFIX = "subsync-fault:"

_WRITES_LINES = re.compile(r"^\s*(INSERT\s+INTO|UPDATE)\s+invoice_lines\b", re.IGNORECASE)


def install_block_after_write(engine: Engine, key: int) -> None:
    def after_cursor_execute(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        if not _WRITES_LINES.match(statement):
            return
        dbapi_connection = cursor.connection  # psycopg: results of `cursor` are already client-side
        dbapi_connection.execute(
            "SELECT set_config('application_name', %s, true)", (f"{APPLICATION_NAME_PREFIX}{os.getpid()}",)
        )
        # Fetched: inside a pipeline (worker.store.write) the client too waits here, so the statements after the
        # write, the sync's COMMIT included, are not sent before the test lets it go on.
        dbapi_connection.execute("SELECT pg_advisory_xact_lock(%s)", (key,)).fetchall()

    event.listen(engine, "after_cursor_execute", after_cursor_execute)
