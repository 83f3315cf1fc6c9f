"""Loading the persisted state of one subscription (docs/sync.md §4) in a constant number of queries: its
lines, its live groups and their children, the invoices those lines are on, the customer's live gathering
invoice of the currency and whether the subscription has live charges (one query), then the existing sync
issues of the immutable invoices among them (one, only when there are any)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import ARRAY, Connection, Text, any_, bindparam, select, text

from worker.domain.persisted import (
    Invoice,
    IssueKey,
    PersistedGroup,
    PersistedLine,
    PersistedState,
    build_persisted_state,
)
from worker.domain.prices import Price
from worker.domain.timeutil import Period
from worker.domain.updater import COMPONENT
from worker.errors import MissingInvoiceError
from worker.store.json_text import price_from_text
from worker.store.row_versions import row_version
from worker.store.tables import invoice_validation_issues

# docs/sync.md §4 steps 1-3 in one statement, one round trip instead of three (groups, lines, invoices; each
# statement costs a small steady-state sync ~0.4 ms, measured with bench/). Rows say what they are:
#   'line'    a line of the subscription or a child of one of its live groups;
#   'group'   a live group: its id, identity and service period in the line columns;
#   'invoice' an invoice referenced by those lines: its id, type, status, immutable and deleted_at.
# The invoices are looked up once, by the distinct ids of the lines (`= ANY(ARRAY(...))`, as the former
# query of their own did), never joined line by line: such a join, planned on stale statistics, scanned
# every invoice of the namespace for each line (1.5 s for 10,000 lines).
# Charge lines (`charge_id` set) are never sync items (docs/credits.md §3.3).
#   'gathering' the customer's live gathering invoice of the currency (docs/sync.md §6.2), id only;
#   'charges'   present when the subscription has a live charge: only then are the charges read
#               (docs/credits.md §3.3), so an invoice_only sync reads no charge table (bench/). Only
#               `PERSISTED_SQL` asks: a credit-mode sync reads its charges anyway (`PERSISTED_LINES_SQL`), and
#               on analyzed tables Postgres answered the EXISTS by a sequential scan of the namespace's charges
#               (1,752 rows filtered, 0.26 ms; docs/performance.md "Planner statistics in the benchmark").
# `row_version` (worker.store.row_versions) names the version of the row read: docs/sync.md §8.6 digests it instead
# of the row's columns (Postgres never changes a row version in place; a rewritten table only looks changed).
# Empty annotations (nearly every line) come back as NULL: no JSON to decode (~2 µs a line). Prices come
# back as text, each distinct one decoded and parsed once (a subscription has a few prices over thousands
# of lines: -28% of a 10,000-line steady sync, bench/).
PERSISTED_LINES_SQL = """
    WITH live_groups AS (
        SELECT id, unique_reference_id, service_period_start, service_period_end, ROW_VERSION AS row_version
        FROM split_line_groups
        WHERE namespace = :namespace AND subscription_id = :subscription_id AND deleted_at IS NULL
    ), lines AS MATERIALIZED (
        SELECT id, invoice_id, managed_by, unique_reference_id, split_line_group_id,
            NULLIF(annotations, '{}'::jsonb) AS annotations, service_period_start, service_period_end,
            billing_period_start, billing_period_end, invoice_at, price::text, deleted_at,
            ROW_VERSION AS row_version
        FROM invoice_lines
        WHERE namespace = :namespace AND subscription_id = :subscription_id AND split_line_group_id IS NULL
            AND (deleted_at IS NULL OR managed_by = 'manual') AND charge_id IS NULL
        UNION ALL
        SELECT id, invoice_id, managed_by, unique_reference_id, split_line_group_id,
            NULLIF(annotations, '{}'::jsonb), service_period_start, service_period_end,
            billing_period_start, billing_period_end, invoice_at, price::text, deleted_at,
            ROW_VERSION
        FROM invoice_lines
        WHERE namespace = :namespace AND split_line_group_id IN (SELECT id FROM live_groups) AND charge_id IS NULL
    )
    SELECT 'line' AS kind, lines.*, NULL::text AS invoice_type, NULL::text AS invoice_status,
        NULL::boolean AS invoice_immutable
    FROM lines
    UNION ALL
    SELECT 'group', id, NULL, NULL, unique_reference_id, NULL, NULL, service_period_start, service_period_end,
        NULL, NULL, NULL, NULL, NULL, row_version, NULL, NULL, NULL
    FROM live_groups
    UNION ALL
    SELECT 'invoice', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, deleted_at,
        ROW_VERSION, type, status, immutable
    FROM invoices
    WHERE namespace = :namespace AND id = ANY(ARRAY(SELECT DISTINCT invoice_id FROM lines))
    UNION ALL
    SELECT 'gathering', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        ROW_VERSION, NULL, NULL, NULL
    FROM invoices
    WHERE namespace = :namespace AND customer_id = :customer_id AND currency = :currency AND type = 'gathering'
        AND deleted_at IS NULL
""".replace("ROW_VERSION", row_version())
PERSISTED_SQL = (
    PERSISTED_LINES_SQL
    + """    UNION ALL
    SELECT 'charges', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'charges', NULL,
        NULL, NULL
    WHERE EXISTS (
        SELECT 1 FROM charges
        WHERE namespace = :namespace AND subscription_id = :subscription_id AND deleted_at IS NULL
    )
"""
)
_PERSISTED = text(PERSISTED_SQL)

_v = invoice_validation_issues
_ISSUES = select(_v.c.invoice_id, _v.c.path, _v.c.component, _v.c.code, _v.c.message).where(
    _v.c.namespace == bindparam("namespace"),
    _v.c.invoice_id == any_(bindparam("ids", type_=ARRAY(Text))),
    _v.c.component == COMPONENT,
    _v.c.deleted_at.is_(None),
)


@dataclass(frozen=True, slots=True)
class PersistedRows:
    """The rows of the persisted-state read, before the issues are known (docs/sync.md §4 steps 1-3)."""

    lines: list[PersistedLine]
    groups: list[PersistedGroup]
    invoices: list[Invoice]
    gathering_invoice_id: str | None
    has_charges: bool

    def state(self, issues: Sequence[IssueKey]) -> PersistedState:
        return build_persisted_state(self.lines, self.groups, self.invoices, issues)


def load_persisted_rows(
    conn: Connection, namespace: str, subscription_id: str, customer_id: str, currency: str
) -> PersistedRows:
    """One statement; MissingInvoiceError when a line's invoice does not exist (docs/sync.md §4)."""
    rows = conn.execute(
        _PERSISTED,
        {"namespace": namespace, "subscription_id": subscription_id, "customer_id": customer_id, "currency": currency},
    ).all()
    return persisted_rows_from(rows)


def persisted_rows_from(rows: Sequence[Any]) -> PersistedRows:
    """`PersistedRows` from rows of `PERSISTED_SQL` (their first column says what each is), in one pass."""
    prices: dict[str, Price | None] = {}
    lines: list[PersistedLine] = []
    groups: list[Any] = []
    invoice_rows: list[Invoice] = []
    gathering: str | None = None
    has_charges = False
    for row in rows:
        kind = row[0]
        if kind == "line":
            lines.append(_line(row, prices))
        elif kind == "invoice":
            invoice_rows.append(
                Invoice(row.id, row.invoice_type, row.invoice_status, row.invoice_immutable, row.deleted_at is not None)
            )
        elif kind == "group":
            groups.append(row)
        elif kind == "gathering":
            gathering = gathering or row.id
        elif kind == "charges":
            has_charges = True
    missing = {line.invoice_id for line in lines} - {i.id for i in invoice_rows}
    if missing:
        raise MissingInvoiceError(f"invoice lines reference missing invoice(s): {', '.join(sorted(missing))}")
    plain: list[PersistedLine] = []
    children: dict[str, list[PersistedLine]] = {g.id: [] for g in groups}
    for line in lines:
        group_id = line.split_line_group_id
        if group_id is None:
            plain.append(line)
        elif group_id in children:
            children[group_id].append(line)
    persisted_groups = [
        PersistedGroup(
            g.id,
            g.unique_reference_id,
            Period(g.service_period_start, g.service_period_end),
            tuple(children[g.id]),
        )
        for g in groups
    ]
    return PersistedRows(plain, persisted_groups, invoice_rows, gathering, has_charges)


#: The line columns of a row of `PERSISTED_SQL`, in `_line`'s order (one C-level call per row).
_LINE_COLUMNS = itemgetter(*range(1, 14))


def _line(row: Sequence[Any], prices: dict[str, Price | None]) -> PersistedLine:
    (
        line_id,
        invoice_id,
        managed_by,
        identity,
        group_id,
        annotations,
        service_start,
        service_end,
        billing_start,
        billing_end,
        invoice_at,
        price_text,
        deleted_at,
    ) = _LINE_COLUMNS(row)
    service_period = Period(service_start, service_end)
    # Positional, in `PersistedLine`'s field order (keyword arguments cost more per line).
    return PersistedLine(
        line_id,
        invoice_id,
        managed_by,
        identity,
        group_id,
        annotations or {},
        service_period,
        (
            service_period
            if billing_start is None and billing_end is None
            else Period(billing_start or service_start, billing_end or service_end)
        ),
        invoice_at,
        price_from_text(price_text, prices),
        deleted_at is not None,
    )


def load_issue_keys(conn: Connection, namespace: str, invoice_ids: Iterable[str]) -> list[IssueKey]:
    """The live sync issues of the given invoices (docs/sync.md §6.4 de-duplication, docs/credits.md §3.13): one
    statement, none when no invoice is given."""
    ids = sorted(set(invoice_ids))
    if not ids:
        return []
    rows = conn.execute(_ISSUES, {"namespace": namespace, "ids": ids}).all()
    return [IssueKey(r.invoice_id, r.path or "", r.component, r.code, r.message) for r in rows]
