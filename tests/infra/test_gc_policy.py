"""The collector of a booted process (worker.infra.gc_policy, docs/operations.md §2 "Garbage collection"): a worker
process applies it once booted, after its warm-up; the policy freezes what the process holds and raises only the
young threshold."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest
from dramatiq.brokers.stub import StubBroker

from worker.infra import gc_policy
from worker.infra.gc_policy import YOUNG_THRESHOLD, apply_gc_policy, collections_paused
from worker.queue.middleware import worker_boot
from worker.queue.middleware.worker_boot import WorkerBoot


@pytest.fixture
def collector_restored() -> Iterator[tuple[int, int, int]]:
    """CPython's default thresholds for the test (the suite may run with others), then this process's own restored,
    with everything the test froze unfrozen."""
    before = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)
    gc.unfreeze()


def test_the_policy_freezes_what_the_process_holds_and_raises_the_young_threshold_only(
    collector_restored: tuple[int, int, int],
) -> None:
    held = [[n] for n in range(1_000)]  # tracked containers alive now
    assert gc.get_freeze_count() == 0
    apply_gc_policy()
    assert gc.get_freeze_count() >= len(held)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *collector_restored[1:])
    assert collector_restored[0] < YOUNG_THRESHOLD
    frozen = gc.get_freeze_count()
    later = [[n] for n in range(100)]
    apply_gc_policy()  # again: what was allocated since is frozen too, the thresholds stay
    assert gc.get_freeze_count() >= frozen + len(later)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *collector_restored[1:])


def test_a_frozen_object_is_still_freed_when_its_last_reference_goes(collector_restored: tuple[int, int, int]) -> None:
    import weakref

    class Held:
        pass

    held = Held()
    alive = weakref.ref(held)
    apply_gc_policy()
    del held
    assert alive() is None  # reference counting frees it: freezing only hides it from the cyclic collector


def test_a_worker_process_applies_the_policy_once_booted_after_its_warm_up(
    collector_restored: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    monkeypatch.setattr(worker_boot, "configure_logging", lambda *args, **kwargs: None)  # keep the test's logging
    real_apply = gc_policy.apply_gc_policy

    def applying() -> None:
        order.append("policy")
        real_apply()

    monkeypatch.setattr(worker_boot, "apply_gc_policy", applying)
    boot = WorkerBoot("json", {"database": "db"}, on_boot=lambda: order.append("warm-up"))
    boot.after_process_boot(StubBroker())
    assert order == ["warm-up", "policy"]
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_freeze_count() > 0


def test_a_failed_warm_up_still_applies_the_policy(
    collector_restored: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_boot, "configure_logging", lambda *args, **kwargs: None)

    def failing() -> None:
        raise ConnectionError("database down at boot")

    WorkerBoot("json", {}, on_boot=failing).after_process_boot(StubBroker())
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


# --- the collector paused during a sync (docs/performance.md "The collector paused during a sync") ---------------


def test_no_collection_runs_inside_a_pause_and_the_collector_is_back_after_it(
    collector_restored: tuple[int, int, int],
) -> None:
    assert gc.isenabled()
    with collections_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collections_paused():
        raise RuntimeError("a failed sync")
    assert gc.isenabled()


def test_concurrent_pauses_resume_the_collector_when_the_last_one_ends(
    collector_restored: tuple[int, int, int],
) -> None:
    entered, leave, left = threading.Event(), threading.Event(), threading.Event()

    def other_sync() -> None:
        with collections_paused():
            entered.set()
            leave.wait(5)
        left.set()

    thread = threading.Thread(target=other_sync)
    thread.start()
    assert entered.wait(5)
    with collections_paused():
        leave.set()
        assert left.wait(5)
        assert not gc.isenabled()  # the other sync ended, this one still runs
    thread.join(5)
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled(collector_restored: tuple[int, int, int]) -> None:
    gc.disable()
    try:
        with collections_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_pause_ends_with_the_young_collection_it_held_back(collector_restored: tuple[int, int, int]) -> None:
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(seen)
    try:
        with collections_paused():
            held = [[n] for n in range(5 * gc.get_threshold()[0])]  # alive: counted, more than a young threshold
            assert collections == []
        assert collections == [0]  # once, young, when the pause ended
        assert gc.get_count()[0] < gc.get_threshold()[0]
    finally:
        gc.callbacks.remove(seen)
    assert len(held) == 5 * gc.get_threshold()[0]


def test_a_pause_ends_with_a_middle_collection_when_the_interpreter_would_have_run_one(
    collector_restored: tuple[int, int, int],
) -> None:
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    for _ in range(gc.get_threshold()[1]):
        gc.collect(0)  # as many young collections as make the middle generation due
    gc.callbacks.append(seen)
    try:
        with collections_paused():
            held = [[n] for n in range(2 * gc.get_threshold()[0])]
        assert collections == [1]
    finally:
        gc.callbacks.remove(seen)
    assert held
