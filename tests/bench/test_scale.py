"""The scale section (issue 25) at CI size: 100,000 subscriptions seeded by SQL in a database of their own, and the
hot statements' plans — captured from the real sync, reconcile_due, advance_charges and advance paths — read every
big table through an index — every one, the never-synced half of the due scan included (it reads
`subscriptions_never_synced` by its primary key since migration 0003, docs/scaling.md §3.2). Plus the options of
`python -m bench --scale`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from bench.database import scratch_database
from bench.scale_cli import parse_args
from bench.scale_plans import Paths, explain_hot
from bench.scale_seed import NAMESPACE, Sizes, analyze, customer_of, row_counts, seed, seed_templates
from tests.builders import t
from worker.store.db import make_engine

CI = Sizes(subscriptions=100_000, customers=1_000, due=2_000, never_synced=1_000)


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


def test_hot_plans_use_their_indexes_at_100000_subscriptions(scale_engine: Engine) -> None:
    counts = row_counts(scale_engine)
    assert counts["subscriptions"] >= 100_000
    assert counts["subscription_sync_states"] >= 100_000 - CI.never_synced
    assert counts["subscriptions_never_synced"] >= CI.never_synced
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
    never = [p for p in plans if p.label == "due scan" and "subscriptions_never_synced" in p.captured.statement]
    assert never and never[0].rows > 0  # the never-synced half read real rows (CI.never_synced of them)
    bad = [p for p in plans if not p.ok]
    assert bad == [], "\n".join(f"{p.label}: {p.verdict.describe()}\n  {p.captured.statement}" for p in bad)
    for p in plans:
        if p.label != "due scan":  # every read of one subscription or customer touches a handful of pages
            assert p.buffers < 1_000, (p.label, p.buffers, p.captured.statement)


def test_scale_options() -> None:
    options = parse_args(
        [
            "--scale",
            "--subscriptions",
            "5000",
            "--customers",
            "50",
            "--due",
            "100",
            "--never-synced",
            "7",
            "--hot",
            "1,5",
        ]
    )
    assert (options.subscriptions, options.customers, options.due, options.hot) == (5000, 50, 100, (1, 5))
    assert options.never_synced == 7
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--scale", "--hot", "0,x"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        parse_args(["--scale", "--due", "10", "--subscriptions", "5"])
    with pytest.raises(SystemExit):
        parse_args(["--scale", "--subscriptions", "100", "--customers", "5", "--due", "60", "--never-synced", "50"])
