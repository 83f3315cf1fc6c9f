"""The hot statements' plans at scale (issue 25): captured from the real code paths, explained with their own
parameters (`bench.capture`), each judged on whether it reads the big tables through an index.

The paths: a (dry-run) sync of a lines subscription and of a credit_only one — every read it sends, labelled by
the tables it reads (the persisted-state read: invoice lines and groups, with the charges folded in; the charge
load: charges read on their own; the subscription load: subscriptions, phases, items) —, the `reconcile_due` due scan, the `advance_charges` due-customer
scan, and one customer's advance (its due-charge load). Statements that read no project table (the customer
lock) are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from bench.capture import Captured, IndexVerdict, capture, distinct, explain_json, index_verdict
from worker.app.charges import advance_customer
from worker.app.handlers import handle_advance_charges, handle_reconcile_due
from worker.app.sync import sync_subscription

BIG_ROWS = 10_000  # a table this big must not be read by a sequential scan


@dataclass(frozen=True, slots=True)
class HotPlan:
    label: str
    captured: Captured
    verdict: IndexVerdict
    execution_ms: float
    rows: int  # rows the statement returned
    buffers: int  # shared buffers hit + read

    @property
    def ok(self) -> bool:
        return self.verdict.ok


def label_of(tables: frozenset[str], path: str) -> str:
    if path != "sync":
        return path
    if tables & {"invoice_lines", "split_line_groups"}:
        return "persisted-state read"  # a credit-mode subscription's charges are folded into it (docs/sync.md §8.1)
    if tables & {"charges", "charge_runs"}:
        return "charge load"
    if tables & {"subscriptions", "subscription_phases", "subscription_items"}:
        return "subscription load"
    return "sync: " + ", ".join(sorted(tables))


@dataclass(frozen=True, slots=True)
class Paths:
    """What to run: subscriptions to sync (id, as_of) and a customer with due charges."""

    namespace: str
    syncs: list[tuple[str, datetime]]
    advance_customer: str | None
    page_size: int = 500


def captured_reads(engine: Engine, paths: Paths) -> list[tuple[str, Captured]]:
    """(label, statement) of every distinct read the hot paths send that touches a project table."""
    runs: list[tuple[str, Callable[[], Any]]] = [
        *(
            ("sync", lambda s=s, a=a: sync_subscription(engine, paths.namespace, s, as_of=a, dry_run=True))
            for s, a in paths.syncs
        ),
        ("due scan", lambda: handle_reconcile_due(engine, lambda r: None, page_size=paths.page_size)),
        ("advance-due scan", lambda: handle_advance_charges(engine, None, lambda r: None, page_size=paths.page_size)),
    ]
    if paths.advance_customer is not None:
        customer = paths.advance_customer
        runs.append(("charge load (advance)", lambda: advance_customer(engine, paths.namespace, customer)))
    out: list[tuple[str, Captured]] = []
    seen: set[str] = set()
    for path, run in runs:
        with capture(engine) as captured:
            run()
        for c in distinct(captured):
            tables = c.tables()
            if c.is_read and tables and c.statement not in seen:
                seen.add(c.statement)
                label = label_of(tables, path)
                if path == "charge load (advance)" and not tables & {"charges"}:
                    label = "advance: " + ", ".join(sorted(tables))
                out.append((label, c))
    return out


def explain_hot(
    engine: Engine, paths: Paths, row_counts: Mapping[str, int], *, big_rows: int = BIG_ROWS
) -> list[HotPlan]:
    plans = []
    for label, c in captured_reads(engine, paths):
        plan = explain_json(engine, c, analyze=True)
        top = plan["Plan"]
        plans.append(
            HotPlan(
                label,
                c,
                index_verdict(plan, row_counts, big_rows=big_rows),
                float(plan.get("Execution Time", 0.0)),
                int(top.get("Actual Rows", 0)),
                int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0)),
            )
        )
    return plans
