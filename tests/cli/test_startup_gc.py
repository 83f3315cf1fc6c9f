"""Start-up speed (docs/contract.md §5): the console script runs a command's start-up without the cyclic
garbage collector and always gives it back; `run` (the in-process entry) never touches it."""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Iterator, Sequence

import pytest

from worker.cli.runtime import pause_gc, resume_gc
from worker.infra.gc_policy import YOUNG_THRESHOLD

cli_main = importlib.import_module("worker.cli.main")  # the module: `worker.cli.main` is also its function


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # what resume_gc froze goes back to the collector of this (long-lived) test process
    gc.set_threshold(*thresholds)  # and its thresholds (worker.infra.gc_policy)
    gc.enable()


def test_main_pauses_the_collector_for_the_command_and_restores_it(
    monkeypatch: pytest.MonkeyPatch, collector_restored: None
) -> None:
    seen: list[bool] = []

    def fake_run(args: Sequence[str]) -> int:
        seen.append(gc.isenabled())
        return 3

    monkeypatch.setattr(cli_main, "run", fake_run)
    monkeypatch.setattr(sys, "argv", ["subsync", "--version"])
    gc.enable()
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code == 3
    assert seen == [False]
    assert gc.isenabled()


def test_main_restores_the_collector_when_the_command_raises(
    monkeypatch: pytest.MonkeyPatch, collector_restored: None
) -> None:
    def failing_run(args: Sequence[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "run", failing_run)
    monkeypatch.setattr(sys, "argv", ["subsync", "--version"])
    gc.enable()
    with pytest.raises(KeyboardInterrupt):
        cli_main.main()
    assert gc.isenabled()


def test_resume_without_a_pause_leaves_the_collector_as_it_was(collector_restored: None) -> None:
    gc.disable()
    resume_gc()
    assert not gc.isenabled()
    gc.enable()
    pause_gc()
    assert not gc.isenabled()
    resume_gc()
    assert gc.isenabled()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD  # the policy of a booted process (worker.infra.gc_policy)
    assert gc.get_freeze_count() > 0
    resume_gc()  # a second resume changes nothing
    assert gc.isenabled()
