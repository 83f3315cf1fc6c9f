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

And while a sync runs (`collections_paused`, around `worker.app.sync.sync_subscription`'s transaction), no cyclic
collection runs at all; the sync ends with the collection it held back.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Container objects allocated between two young collections (CPython's default: 700).
YOUNG_THRESHOLD = 10_000


def apply_gc_policy() -> None:
    """Freeze what the process holds now and set the collector's thresholds (see the module doc). Called once a
    process has booted: a `dramatiq` worker process (worker.queue.middleware.worker_boot), a command once its
    engine or broker exists (worker.cli.runtime). Idempotent: a second call freezes what was allocated since."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


_pause_lock = threading.RLock()  # re-entrant: code a collection runs (a finalizer) may enter a pause
_pauses = 0  # syncs of this process running in `collections_paused`
_resume = False  # whether the collector was enabled when the first of them began


@contextmanager
def collections_paused() -> Iterator[None]:
    """No cyclic collection while the block runs (a sync: worker.app.sync). What a sync allocates lives until its
    plan is written and is then freed by reference counting, so every collection inside it scans objects that are
    about to go, and moves them to older generations that later collections scan again: 3-5 % of a 10,004-line
    steady sync's time (docs/performance.md "The collector paused during a sync"). The collector runs again when
    the last of the process's concurrent pauses ends (threads), and each pause ends with the collection the
    interpreter would have run meanwhile (`_collect_held_back`), on the caller's time, once that sync's objects are
    gone: so concurrent syncs that keep the collector paused still collect after each sync. A collector disabled
    before stays so."""
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _resume:
                _collect_held_back()  # before enabling: the next allocation would run a collection of its own
                if _pauses == 0:
                    gc.enable()


def _collect_held_back() -> None:
    """The collection the interpreter would have run by now, if any: young, or the middle generation too when
    enough young ones have run (as CPython decides, leaving full collections to it: concurrent syncs may keep the
    collector paused for a while, and cyclic garbage must not pile up meanwhile)."""
    (young, middle, _), (young_threshold, middle_threshold, _) = gc.get_count(), gc.get_threshold()
    if young >= young_threshold:
        gc.collect(1 if middle >= middle_threshold else 0)
