"""The benchmark's quick path on a tiny size, against the test database: it must produce every figure
(timings are printed, never asserted)."""

from __future__ import annotations

import math

from sqlalchemy import Engine

from bench import credits, startup
from bench.cli import Options, parse_args, run
from bench.report import render
from bench.seeding import FLOOR, REAL, Shape
from worker.app.sync import sync_subscription

TINY = Options(
    subscriptions=3,
    phases=2,
    items=4,
    months=1,
    repeats=2,
    workers=0,
    scale_days=(1, 2, 4),
    scale_repeats=1,
    startup_repeats=0,  # measured by its own test below
    credit_months=(2, 4),
)
AS_OF = Shape(TINY.phases, TINY.items, TINY.months).as_of


def test_quick_path_produces_every_figure(db: Engine, database_url: str) -> None:
    results = run(TINY, database_url, scratch=False)

    first, steady, _ = results.scenarios
    for scenario in results.scenarios:
        assert scenario.lines > 0
        for figures in (scenario.real, scenario.floor):
            assert figures.seconds and not math.isnan(figures.median) and not math.isnan(figures.p95)
            assert figures.counts is not None
            assert figures.counts.statements > 0 and figures.counts.round_trips > 0
    # The floor does the same database work: the same rows, in three statements.
    for scenario in results.scenarios:
        assert scenario.real.counts is not None and scenario.floor.counts is not None
        assert scenario.real.counts.rows_written == scenario.floor.counts.rows_written
        assert scenario.floor.counts.statements == 3
    assert steady.real.counts is not None and steady.real.counts.rows_written == 1  # the sync state only
    assert first.real.counts is not None and first.real.counts.rows_written > first.lines

    # Statements per sync do not depend on the number of lines.
    assert [p.first.lines for p in results.scaling] == sorted({p.first.lines for p in results.scaling})
    assert len({p.first.real.counts.statements for p in results.scaling if p.first.real.counts}) == 1
    assert len({p.steady.real.counts.statements for p in results.scaling if p.steady.real.counts}) == 1

    # Credits (issue 15): the same three scenarios on charges, at two sizes, against a two-statement floor.
    assert [size.months for size in results.credits] == [2, 4]
    small, large = results.credits
    assert 0 < small.first.lines < large.first.lines  # charges of one subscription
    for size in results.credits:
        for scenario in size.scenarios:
            assert scenario.real.seconds and scenario.floor.seconds
            assert scenario.real.counts is not None and scenario.floor.counts is not None
            assert scenario.real.counts.rows_written == scenario.floor.counts.rows_written
            assert scenario.floor.counts.statements == 2
        assert size.steady.real.counts is not None and size.steady.real.counts.rows_written == 1
        # a first sync writes its charges, the sync state, and (its trigger, migration 0003) deletes the
        # subscription's never-synced row: docs/scaling.md §3.2
        assert size.first.real.counts is not None and size.first.real.counts.rows_written == size.first.lines + 2
    for n in range(3):  # first, steady, edit: statements do not depend on the number of charges
        assert small.scenarios[n].real.counts.statements == large.scenarios[n].real.counts.statements  # type: ignore[union-attr]

    report = render(results)
    assert "ratio to floor" in report and "fitted exponent" in report and "Targets:" in report
    assert "Targets of issue 16" in report and "[PASS]" in report
    assert "Targets of issue 15" in report and f"({large.first.lines} charges)" in report

    # The floor left each twin as the sync would have: syncing either one again changes nothing.
    for namespace in (REAL, FLOOR):
        for n in range(TINY.subscriptions):
            again = sync_subscription(db, namespace, f"sub_{n:05d}", as_of=AS_OF, dry_run=True)
            assert again.patches == (), namespace
        for size in results.credits:
            for seeded in credits.seed_ids(size.months, 2):
                again = sync_subscription(db, namespace, seeded.subscription_id, as_of=seeded.as_of, dry_run=True)
                assert again.patches == (), namespace


def test_options() -> None:
    assert parse_args([]) == Options()
    quick = parse_args(["--quick", "-k", "0", "--scale-days", "1,10"])
    assert quick.subscriptions < Options().subscriptions and quick.workers == 0 and quick.scale_days == (1, 10)
    assert parse_args(["--credit-months", "6,12"]).credit_months == (6, 12)
    assert parse_args(["--credit-months", ""]).credit_months == ()


def test_startup_section_runs_every_command(db: Engine, database_url: str) -> None:
    """`python -m bench --startup`: each command runs and is measured (timings printed, never asserted)."""
    startup.seed(database_url)
    measured = startup.measure(database_url, repeats=1)
    assert [run.failed for run in measured.runs] == [None] * len(measured.runs)
    assert all(len(run.seconds) == len(run.cpu) == 1 for run in measured.runs)
    text = "\n".join(startup.render(measured))
    assert "subsync --help" in text and "python -c pass" in text
    assert text.count("[PASS]") + text.count("[FAIL]") == len(measured.runs) - 1  # all but the bare interpreter
    assert parse_args(["--startup", "--startup-repeats", "3"]).startup_only
