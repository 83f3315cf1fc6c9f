"""The benchmark's quick path on a tiny size, against the test database: it must produce every figure
(timings are printed, never asserted)."""

from __future__ import annotations

import dataclasses
import io
import math
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from bench import compare, credits, startup
from bench.cli import Options, parse_args, run
from bench.figures import collect
from bench.report import Results, render
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

    # Issue 23: the decide step of the largest scaling subscription, alone (its CPU time, no database).
    assert results.decide is not None and results.decide.lines == results.scaling[-1].steady.lines
    assert 0 < results.decide.cpu_min <= results.decide.cpu_median
    assert f"{results.decide.lines} lines decide CPU min ms" in collect(results)

    report = render(results)
    assert "decide step alone" in report
    assert "planner statistics: ANALYZE after seeding and after each first-sync pass" in report  # bench.measure.analyze
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
    assert Options().analyze and not parse_args(["--no-analyze"]).analyze
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
    assert measured.load.startswith("load average") and f"machine: {measured.load} at the start" in text
    assert text.count("[PASS]") + text.count("[FAIL]") == len(measured.runs) - 1  # all but the bare interpreter
    assert parse_args(["--startup", "--startup-repeats", "3"]).startup_only


def test_the_startup_commands_take_turns(tmp_path: Path) -> None:
    """Round after round, each command once per round (after a warm-up round): a burst of load costs every
    command a run, not all of one command's runs; a failing command is reported and not run again."""
    log = tmp_path / "order"
    write = f"import sys; open({str(log)!r}, 'a').write(sys.argv[1])"
    runs = [
        startup.Run("a", [sys.executable, "-c", write, "a"], None),
        startup.Run("b", [sys.executable, "-c", write + "; sys.exit(3)", "b"], 0.5),
        startup.Run("c", [sys.executable, "-c", write, "c"], 0.5),
    ]
    measured = startup.measure("postgresql://unused/db", repeats=2, runs=runs)
    assert log.read_text() == "abc" + "ac" + "ac"
    a, b, c = measured.runs
    assert len(a.seconds) == len(a.cpu) == len(c.seconds) == 2 and b.seconds == []
    assert b.failed is not None and a.failed is None and c.failed is None


def test_a_full_run_measures_the_startup_section_first(
    db: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read commands are timed before anything is seeded or synced (measured last, they ran while Postgres
    still worked on the heavy sections' writes), on the demo subscription only; the report prints them."""
    seen: list[tuple[int, int]] = []

    def measure(url: str, *, repeats: int = 7, runs: object = None) -> startup.StartUp:
        with db.connect() as conn:
            counts = conn.execute(
                text("SELECT count(*) FILTER (WHERE namespace <> 'demo'), count(*) FROM subscriptions")
            ).one()
        seen.append((counts[0], counts[1]))
        return startup.StartUp([startup.Run("python -c pass", ["true"], None, [0.02], [0.02])], repeats, "load x")

    monkeypatch.setattr(startup, "measure", measure)
    tiny = dataclasses.replace(TINY, subscriptions=2, repeats=1, scale_days=(1,), credit_months=(), startup_repeats=2)
    results = run(tiny, database_url, scratch=False)
    assert seen == [(0, 2)]  # the demo's two subscriptions, nothing of the benchmark's yet
    assert results.startup is not None and results.startup.repeats == 2
    assert "machine: load x at the start of this section" in render(results)


def test_queue_floor_runs_beside_the_workers(db: Engine, database_url: str, redis_url: str) -> None:
    """Issue 23: the workers and the queue floor (same command line, one actor running the floor's SQL) each
    drain the events of every round; their throughput, message times and CPU per message are reported and
    checked as targets (timings printed, never asserted)."""
    tiny = dataclasses.replace(
        TINY, subscriptions=2, workers=1, threads=1, repeats=1, scale_days=(1,), credit_months=()
    )
    results = run(tiny, database_url, scratch=False)

    e2e = results.end_to_end
    assert e2e is not None, results.end_to_end_error
    assert e2e.queue_floor is not None
    for drain in (e2e.workers, e2e.queue_floor):
        assert len(drain.per_round) == len(drain.cpu_per_message) == tiny.repeats
        assert all(rate > 0 for rate in drain.per_round) and all(cpu >= 0 for cpu in drain.cpu_per_message)
        assert len(drain.message_ms) == tiny.subscriptions * tiny.repeats  # each counted message, once
    # The queue floor synced the floor twins: a sync state written for each, as the floor's SQL does.
    with db.connect() as conn:
        synced = conn.execute(
            text("SELECT count(*) FROM subscription_sync_states WHERE namespace = :ns"), {"ns": FLOOR}
        ).scalar_one()
    assert synced >= tiny.subscriptions

    report = render(results)
    assert "End to end against the queue floor" in report and "CPU ms/message" in report
    assert "Targets of issue 23" in report and "load average" in report
    assert "[INFO] end to end" in report and "retired target, informational" in report  # issue 16's, kept
    assert "the queue floor's throughput" in report and "worker CPU per message" in report
    assert "round trips per sync <= floor + 2" in report
    figures = collect(results)
    assert figures["e2e syncs/s"] > 0 and figures["queue floor syncs/s"] > 0 and figures["e2e CPU ms/message"] >= 0
    # A CPU ratio only when the queue floor used at least one clock tick (a tiny run may not).
    assert ("e2e CPU/message x queue floor" in figures) == (figures["queue floor CPU ms/message"] > 0)
    assert figures["steady state statements"] == steady_statements(results)


def steady_statements(results: Results) -> float:
    counts = results.scenarios[1].real.counts
    assert counts is not None
    return float(counts.statements)


def test_compare_runs_both_trees_interleaved(database_url: str) -> None:
    """`python -m bench --compare REV` at a tiny size: both sides measured by the current bench code, every
    figure printed with its ratio and spread (one round per side; nothing timed is asserted)."""
    tiny = ["-n", "2", "-p", "1", "-m", "1", "-r", "1", "-k", "0", "--scale-days", "1", "--scale-repeats", "1"]
    tiny += ["--credit-months", "", "--startup-repeats", "0"]
    assert compare.without_compare(["--compare", "HEAD", *tiny, "--rounds=2", "--json", "x"]) == tiny
    log = io.StringIO()
    report = compare.compare("HEAD", ["--compare", "HEAD", *tiny], rounds=1, log=log)
    assert "current tree against HEAD, 1 interleaved round(s)" in report and "load average" in report
    assert "steady state statements" in report and "first sync CPU ms" in report
    row = next(line for line in report.splitlines() if line.startswith("steady state statements"))
    assert "1.000" in row  # the same code on both sides: the same statements
    assert log.getvalue().count("round 1/1") == 2


def test_compare_renders_ratios_with_their_spread() -> None:
    current = [{"a ms": 2.0, "n": 4.0}, {"a ms": 3.0, "n": 4.0}, {"a ms": 2.0, "n": 4.0}] * 2
    other = [{"a ms": 4.0, "n": 4.0}, {"a ms": 4.0, "n": 4.0}, {"a ms": 5.0, "n": 4.0}] * 2
    assert compare.ratios(current, other, "a ms") == [0.5, 0.75, 0.4] * 2
    text = compare.render("v1", current, other, ["load x", "load y"], 1.0)
    a_row = next(line for line in text.splitlines() if line.startswith("a ms"))
    assert "0.500" in a_row and "0.400–0.750" in a_row and "0.031" in a_row and a_row.endswith("*")  # 6 of 6 below
    n_row = next(line for line in text.splitlines() if line.startswith("n "))
    assert "1.000–1.000" in n_row and not n_row.endswith("*")
    # Three rounds on one side are a hint, not evidence: p = 0.25, no star.
    assert compare.sign_test([0.9, 0.8, 0.95]) == 0.25 and compare.sign_test([0.9, 1.1] * 3) == 1.0


def test_compare_options() -> None:
    options = parse_args(["--compare", "main", "--rounds", "5", "--quick"])
    assert options.compare == "main" and options.rounds == 5
    assert parse_args(["--json", "out.json"]).json_path == "out.json"
    for bad in (["--rounds", "0"], ["--compare", "main", "--keep"]):
        try:
            parse_args(bad)
        except SystemExit as exc:
            assert exc.code == 2, bad
        else:
            raise AssertionError(f"{bad} accepted")
