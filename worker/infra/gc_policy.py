"""The cyclic garbage collector of a subsync process that syncs (docs/operations.md §2 "Garbage collection").

CPython's collector runs a young collection every 700 container objects allocated, and a full one (every
object of the process) after ten of the next generation, once enough objects have survived. A sync allocates
objects per line and per charge and keeps them until its plan is written: a 10,004-line sync allocates a few
hundred thousand, so with the defaults it ran about one full collection of the whole process per sync, and in a
process holding only the worker's modules it took 177 ms of CPU instead of 105 with this policy
(docs/performance.md "The garbage collector in a large sync").
Everything a sync allocates is freed by reference counting when the sync ends; almost none of it is cyclic.

So, once a process has booted: what it holds then (modules, classes, the engine's pool) is frozen out of every
collection (`gc.freeze`: it lives as long as the process), and young collections run every `YOUNG_THRESHOLD`
allocations instead of 700. The older generations keep CPython's thresholds. The cost: cyclic garbage (an
exception's traceback, say) waits a little longer for its collection.
"""

from __future__ import annotations

import gc

#: Container objects allocated between two young collections (CPython's default: 700).
YOUNG_THRESHOLD = 10_000


def apply_gc_policy() -> None:
    """Freeze what the process holds now and set the collector's thresholds (see the module doc). Called once a
    process has booted: a `dramatiq` worker process (worker.queue.middleware.worker_boot), a command once its
    engine or broker exists (worker.cli.runtime). Idempotent: a second call freezes what was allocated since."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
