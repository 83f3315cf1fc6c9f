"""The scale section (issue 25) at CI size: 100,000 subscriptions seeded by SQL in a database of their own, and the
hot statements' plans — captured from the real sync, reconcile_due, advance_charges and advance paths — read every
big table through an index. Plus the options of `python -m bench --scale`.

One statement is a known exception, asserted as such so that it cannot hide another: the never-synced half of
the due scan (docs/sync.md §8.4) anti-joins every subscription with its sync state, which no index can serve
(docs/scaling.md §3 measures it and says what would).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from bench.database import scratch_database
from bench.scale_cli import parse_args
from bench.scale_plans import HotPlan, Paths, explain_hot
from bench.scale_seed import NAMESPACE, Sizes, analyze, customer_of, row_counts, seed, seed_templates
from tests.builders import t
from worker.store.db import make_engine

CI = Sizes(subscriptions=100_000, customers=1_000, due=2_000)


@pytest.fixture(scope="module")
def scale_engine(server_url: str) -> Iterator[Engine]:
    with scratch_database(server_url) as url:
        engine = make_engine(url, pool_size=2)
        try:
            seed_templates(engine)
            seed(engine, CI, datetime.now(UTC))
            analyze(engine)
            yield engine
        finally:
            engine.dispose()


def _is_never_synced_scan(plan: HotPlan) -> bool:
    text = plan.captured.statement.upper()
    return (
        plan.label == "due scan"
        and "NOT (EXISTS" in text
        and set(plan.verdict.tables)
        == {
            "subscriptions",
            "subscription_sync_states",
        }
    )


def test_hot_plans_use_their_indexes_at_100000_subscriptions(scale_engine: Engine) -> None:
    counts = row_counts(scale_engine)
    assert counts["subscriptions"] >= 100_000 and counts["subscription_sync_states"] >= 100_000
    assert counts["invoice_lines"] >= 100_000 and counts["charges"] >= 30_000
    credit = CI.credit_every
    paths = Paths(
        NAMESPACE,
        [("s-11", t("2023-01-15T12:00:00Z")), (f"s-{credit}", t("2023-01-15T12:00:00Z"))],
        customer_of(credit * 10, CI.customers),
    )
    plans = explain_hot(scale_engine, paths, counts)
    labels = {p.label for p in plans}
    # The sync reads the subscription, then everything else in one persisted-state read (charges folded in).
    assert {"subscription load", "persisted-state read", "due scan", "advance-due scan"} <= labels
    assert "charge load (advance)" in labels
    bad = [p for p in plans if not p.ok]
    exceptions = [p for p in bad if _is_never_synced_scan(p)]
    assert len(exceptions) <= 1
    assert [p for p in bad if p not in exceptions] == [], "\n".join(
        f"{p.label}: {p.verdict.describe()}\n  {p.captured.statement}" for p in bad
    )
    for p in plans:
        if p.label != "due scan":  # every read of one subscription or customer touches a handful of pages
            assert p.buffers < 1_000, (p.label, p.buffers, p.captured.statement)


def test_scale_options() -> None:
    options = parse_args(["--scale", "--subscriptions", "5000", "--customers", "50", "--due", "100", "--hot", "1,5"])
    assert (options.subscriptions, options.customers, options.due, options.hot) == (5000, 50, 100, (1, 5))
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--scale", "--hot", "0,x"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        parse_args(["--scale", "--due", "10", "--subscriptions", "5"])
