"""The queue floor (issue 23): the worker's Dramatiq process with one bench-only actor that runs the floor's SQL.

`python -m dramatiq bench.queue_floor:main --processes K --threads T …` (the same command line, broker,
middleware, engine and log format as `subsync worker`, see `bench.e2e`) declares, on the
`subscription-sync` queue, an actor named like the real `subscription_event` whose body, for each
`subscription.updated` message, runs exactly `bench.floor.run` for that subscription and nothing else:
two reads and the one prepared write. What separates the real workers from it is the sync itself
(parsing the event, loading, planning, writing), not Dramatiq, Redis, the middleware or the process
layout.

The floor's writes are prepared by the benchmark before the workers start (dry runs of the real sync on
the floor twins, `bench.floor.prepare`) and handed over in a pickle file named by `SUBSYNC_BENCH_FLOOR_WORKS`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from bench import floor

WORKS_ENV = "SUBSYNC_BENCH_FLOOR_WORKS"
ENTRY = "bench.queue_floor:main"


def save_works(works: Sequence[floor.FloorWork], path: Path) -> None:
    """Write the prepared floor works (statement text and parameters) for the queue floor's processes."""
    plain = {w.subscription_id: (w.customer_id, w.currency, w.sql, w.params, w.planned_rows) for w in works}
    path.write_bytes(pickle.dumps(plain))


def load_works(path: Path) -> dict[str, floor.FloorWork]:
    plain: dict[str, tuple[str, str, str, dict[str, Any], int]] = pickle.loads(path.read_bytes())
    return {
        sub: floor.FloorWork(sub, customer, currency, floor.statement(sql, params), params, rows, sql)
        for sub, (customer, currency, sql, params, rows) in plain.items()
    }


def floor_body(works: dict[str, floor.FloorWork], engine: Any) -> Any:
    """The actor's body: the floor's transaction for the message's subscription, nothing else (the
    event id is bound to the log context so that `message.done` names it, as the real actor does)."""
    import structlog

    def body(payload: dict[str, Any]) -> None:
        structlog.contextvars.bind_contextvars(event_id=payload["event_id"])
        db: Engine = engine()
        floor.run(db, works[payload["subscription_id"]])

    return body


def main() -> None:
    """Wire a queue-floor process like `worker.bootstrap.worker_process` wires a worker process."""
    import dramatiq

    from worker.bootstrap import LazyEngine, broker, describe
    from worker.config import load_settings
    from worker.contract.events import QUEUE_NAME, SUBSCRIPTION_EVENT_ACTOR
    from worker.queue.middleware.worker_boot import WorkerBoot

    settings = load_settings()
    process_broker = broker(settings, metrics=settings.metrics_enabled)
    engine = LazyEngine(settings)
    process_broker.add_middleware(WorkerBoot(settings.effective_log_format, describe(settings), on_boot=engine.warm))
    works = load_works(Path(os.environ[WORKS_ENV]))
    decorator: Any = dramatiq.actor(
        actor_name=SUBSCRIPTION_EVENT_ACTOR,
        broker=process_broker,
        queue_name=QUEUE_NAME,
        time_limit=int(settings.time_limit_seconds * 1000),
    )
    decorator(floor_body(works, engine))
    dramatiq.set_broker(process_broker)
