"""Seeding the scale section (issue 25) with SQL: N subscriptions across C customers by `generate_series`.

Two template subscriptions are written through the real write path and synced once, in namespace `tpl`:
`tpl_a` (invoice_only: one monthly in-advance fee, two lines) and `tpl_b` (credit_only: three monthly
items, four charges). Every seeded subscription `s-<g>` (g = 1..N) of namespace `scale` is a copy
of one of them — every `credit_every`-th one of `tpl_b`, the others of `tpl_a` — made by one
`INSERT ... SELECT ... CROSS JOIN generate_series` per table: its phases, items, lines, groups, charges and sync
state, ids suffixed `-<g>`, belonging to customer `c-<g mod C>`, lines on that customer's gathering invoice
`inv-<g mod C>`. The copies are faithful enough to sync (their reference ids name their own subscription).

Sync states: the first `due` copies are due (`next_sync_after` in the past), the last `never_synced` copies have
none (due as never synced, docs/sync.md §8.4), the others are due within the next day; every 10th credit copy has its charges due to advance (`advance_after` in the past), the others not for a
month. The column lists come from `worker.store.tables`, so a migration that adds a column is copied too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Table, create_engine, pool, text

from bench import credits
from bench.seeding import Shape, _apply, mixed_document
from worker.app.sync import sync_subscription
from worker.store import tables as t

NAMESPACE = "scale"
TEMPLATE_NS = "tpl"
TEMPLATE_CUSTOMER = "tpl_cust"
LINES_TEMPLATE = "tpl_a"
CREDIT_TEMPLATE = "tpl_b"
LINES_SHAPE = Shape(phases=1, items=1, months=1)
CREDIT_MONTHS = 1


@dataclass(frozen=True, slots=True)
class Sizes:
    subscriptions: int
    customers: int
    due: int  # subscriptions due for reconcile_due
    credit_every: int = 10  # every n-th subscription is credit_only (its charges load and advance)
    never_synced: int = 0  # the last copies have no sync state (docs/sync.md §8.4: due as never synced)


def sub_id(g: int) -> str:
    return f"s-{g}"


def customer_of(g: int, customers: int) -> str:
    return f"c-{g % customers}"


def seed_templates(engine: Engine) -> None:
    """The two template subscriptions through the real write path, each synced once (their lines, charges)."""
    _apply(engine, [mixed_document(TEMPLATE_NS, LINES_TEMPLATE, TEMPLATE_CUSTOMER, LINES_SHAPE, edited=False)])
    doc = credits.credit_document(TEMPLATE_NS, CREDIT_TEMPLATE, TEMPLATE_CUSTOMER, CREDIT_MONTHS, edited=False)
    _apply(engine, [doc])
    sync_subscription(engine, TEMPLATE_NS, LINES_TEMPLATE, as_of=LINES_SHAPE.as_of)
    sync_subscription(engine, TEMPLATE_NS, CREDIT_TEMPLATE, as_of=credits.as_of(CREDIT_MONTHS))


_SID = "(CAST(:prefix AS text) || g)"
# a regular copy belongs to customer c-<g mod C>; a hot customer's copies (`seed_customer`) to that customer
_CID = "coalesce(CAST(:customer AS text), 'c-' || (g % CAST(:customers AS bigint)))"
_SUFFIXED = ("id", "phase_id", "subscription_phase_id", "subscription_item_id", "split_line_group_id", "charge_id")


def _expression(table: Table, column: str) -> str:
    special = {
        "namespace": ":ns",
        "customer_id": _CID,
        "subscription_id": _SID,
        "invoice_id": f"'inv-' || {_CID}",
        "unique_reference_id": f"replace(t.unique_reference_id, :template, {_SID})",
        # due: the first :due copies; the others within the next day (spread by g)
        "next_sync_after": "CASE WHEN g <= CAST(:due AS bigint) THEN :now - make_interval(secs => g % 3600) "
        "ELSE :now + make_interval(secs => 60 + g % 86400) END",
        # every 10th credit copy has due charges (docs/credits.md §2.5); the others advance in a month
        "advance_after": "CASE WHEN t.advance_after IS NULL THEN NULL WHEN g % (CAST(:credit_every AS bigint) * 10) = 0 "
        "THEN :now - interval '1 hour' ELSE :now + interval '30 days' + make_interval(secs => g % 86400) END",
    }
    if table is t.subscriptions and column == "id":
        return _SID
    if column in special:
        return special[column]
    if column in _SUFFIXED:
        return f"t.{column} || '-' || {_SID}"
    return f"t.{column}"


def _copy(table: Table, belongs: str) -> str:
    columns = [c.name for c in table.columns if c.identity is None]
    values = ", ".join(_expression(table, c) for c in columns)
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {values} FROM {table.name} AS t "
        f"CROSS JOIN generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g "
        f"WHERE t.namespace = :tpl_ns AND ({belongs}) AND ((g % CAST(:credit_every AS bigint) = 0) = :credit)"
    )


_PHASES_OF = "SELECT id FROM subscription_phases WHERE namespace = :tpl_ns AND subscription_id = :template"
_COPIED: tuple[tuple[Table, str], ...] = (
    (t.subscriptions, "t.id = :template"),
    (t.subscription_phases, "t.subscription_id = :template"),
    (t.subscription_items, f"t.phase_id IN ({_PHASES_OF})"),
    (t.split_line_groups, "t.subscription_id = :template"),
    (t.invoice_lines, "t.subscription_id = :template"),
    (t.subscription_sync_states, "t.subscription_id = :template AND g <= CAST(:synced_to AS bigint)"),
    (t.charges, "t.subscription_id = :template"),
)

_CUSTOMERS = """
INSERT INTO customers (namespace, id, name)
SELECT :ns, coalesce(CAST(:customer AS text), 'c-' || k), 'Customer ' || k
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS k
"""
_INVOICES = """
INSERT INTO invoices (namespace, id, customer_id, currency, type, status, immutable)
SELECT :ns, 'inv-' || coalesce(CAST(:customer AS text), 'c-' || k), coalesce(CAST(:customer AS text), 'c-' || k),
    t.currency, t.type, t.status, t.immutable
FROM invoices AS t CROSS JOIN generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS k
WHERE t.namespace = :tpl_ns AND t.customer_id = :tpl_customer AND t.type = 'gathering'
"""


def seed(engine: Engine, sizes: Sizes, now: datetime, *, start: int = 1, customers_from: int = 0) -> float:
    """Copies s-<g>, g = start..sizes.subscriptions (customers `customers_from`..C-1 created first); seconds
    taken. Growing a seeded database is calling it again with `start` = the previous size + 1."""
    began = time.perf_counter()
    params = _params(sizes, now, prefix="s-", customer=None)
    if customers_from < sizes.customers:
        _customers(engine, params, customers_from, sizes.customers - 1)
    _copies(engine, params, start, sizes.subscriptions)
    return time.perf_counter() - began


def hot_prefix(count: int) -> str:
    return f"h{count}-"


def hot_customer(count: int) -> str:
    return f"hot-{count}"


def seed_customer(engine: Engine, count: int, sizes: Sizes, now: datetime) -> list[str]:
    """Customer `hot-<count>` with `count` copies `h<count>-<g>` (credit copies every `credit_every`-th, none
    due); their ids."""
    params = _params(sizes, now, prefix=hot_prefix(count), customer=hot_customer(count))
    params["due"] = 0
    params["synced_to"] = count
    _customers(engine, params, 0, 0)
    _copies(engine, params, 1, count)
    return [f"{hot_prefix(count)}{g}" for g in range(1, count + 1)]


def _params(sizes: Sizes, now: datetime, *, prefix: str, customer: str | None) -> dict[str, object]:
    return {
        "ns": NAMESPACE,
        "tpl_ns": TEMPLATE_NS,
        "tpl_customer": TEMPLATE_CUSTOMER,
        "customers": sizes.customers,
        "due": sizes.due,
        "synced_to": sizes.subscriptions - sizes.never_synced,
        "credit_every": sizes.credit_every,
        "now": now,
        "prefix": prefix,
        "customer": customer,
    }


def _fresh(engine: Engine) -> Engine:
    """A pool-less engine on `engine`'s database: each step on a new backend. A backend caches the plans of
    its foreign-key checks; one planned while a parent table was nearly empty seq-scans it for every row."""
    return create_engine(engine.url, poolclass=pool.NullPool)


def _customers(engine: Engine, params: dict[str, object], lo: int, hi: int) -> None:
    fresh = _fresh(engine)
    try:
        with fresh.begin() as conn:
            conn.execute(text(_CUSTOMERS), {**params, "lo": lo, "hi": hi})
            conn.execute(text("ANALYZE customers"))
            conn.execute(text(_INVOICES), {**params, "lo": lo, "hi": hi})
            conn.execute(text("ANALYZE invoices"))
    finally:
        fresh.dispose()


def _copies(engine: Engine, params: dict[str, object], lo: int, hi: int) -> None:
    fresh = _fresh(engine)
    try:
        for table, belongs in _COPIED:
            statement = text(_copy(table, belongs))
            with fresh.begin() as conn:
                for template, credit in ((LINES_TEMPLATE, False), (CREDIT_TEMPLATE, True)):
                    conn.execute(statement, {**params, "lo": lo, "hi": hi, "template": template, "credit": credit})
                conn.execute(text(f"ANALYZE {table.name}"))  # before the next table's foreign-key checks
    finally:
        fresh.dispose()


def analyze(engine: Engine) -> None:
    """VACUUM ANALYZE every project table (fresh statistics and visibility map, as autovacuum would leave them)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in t.ALL_TABLES:
            conn.execute(text(f"VACUUM ANALYZE {table.name}"))


def row_counts(engine: Engine) -> dict[str, int]:
    """Estimated rows per project table (pg_class.reltuples, fresh after `analyze`)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT relname, reltuples::bigint FROM pg_class WHERE relname = ANY(:names) AND relkind = 'r'"),
            {"names": [table.name for table in t.ALL_TABLES]},
        )
        return {name: max(int(n), 0) for name, n in rows}
