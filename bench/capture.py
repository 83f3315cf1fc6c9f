"""Capturing the SQL a code path executes, and explaining it (issue 25).

Nothing here names a statement: `capture` records every statement the real functions send (SQLAlchemy's
`before_cursor_execute`, with its parameters), and `explain` asks Postgres for the plan of what was recorded. So
the checks follow the code when its statements change (the sync's load → decide → write reshape included).

- `explain_json`: `EXPLAIN (FORMAT JSON[, ANALYZE, BUFFERS][, VERBOSE])` of a captured statement with its own
  parameters, inside a transaction that is rolled back (ANALYZE runs the statement).
- `plan_nodes`: every node of a plan, CTEs and sub-plans included.
- `index_verdict`: does the plan read every big table (≥ `big_rows` rows) through an index?
- `namespace_problems`: which scans of project tables lack a `namespace` condition, which inserts do not carry it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event

from worker.store.tables import ALL_TABLES

PROJECT_TABLES = frozenset(table.name for table in ALL_TABLES)
_INDEX_NODES = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
_CONDITIONS = ("Index Cond", "Recheck Cond", "Filter", "Join Filter", "Hash Cond", "Merge Cond")


@dataclass(frozen=True, slots=True)
class Captured:
    statement: str
    parameters: Any  # a mapping, or for an executemany the sequence of them

    @property
    def first_parameters(self) -> Any:
        p = self.parameters
        if isinstance(p, list | tuple) and p and isinstance(p[0], Mapping | list | tuple):
            return p[0]
        return p

    @property
    def is_read(self) -> bool:
        """A statement that writes nothing (safe to EXPLAIN ANALYZE): a SELECT/WITH without a data-modifying verb."""
        head = self.statement.lstrip().upper()
        if not head.startswith(("SELECT", "WITH")):
            return False
        return re.search(r"\b(INSERT|UPDATE|DELETE)\b", head) is None

    def tables(self) -> frozenset[str]:
        """Project tables the statement names (FROM, JOIN, INTO, UPDATE, DELETE FROM), by a look at its text."""
        names = re.findall(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(?:ONLY\s+)?\"?(\w+)\"?", self.statement, re.IGNORECASE)
        return frozenset(n.lower() for n in names) & PROJECT_TABLES


@contextmanager
def capture(engine: Engine) -> Iterator[list[Captured]]:
    """Every statement executed on `engine` inside the block, in order (all its connections)."""
    captured: list[Captured] = []

    def on_execute(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        captured.append(Captured(statement, parameters))

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield captured
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def distinct(captured: list[Captured]) -> list[Captured]:
    """The first execution of each distinct statement text."""
    seen: dict[str, Captured] = {}
    for c in captured:
        seen.setdefault(c.statement, c)
    return list(seen.values())


def explain_json(engine: Engine, captured: Captured, *, analyze: bool = False, verbose: bool = False) -> dict[str, Any]:
    """The plan (the top object of EXPLAIN's JSON) of `captured` with its parameters; rolled back afterwards."""
    options = ["FORMAT JSON"] + (["ANALYZE", "BUFFERS"] if analyze else []) + (["VERBOSE"] if verbose else [])
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        try:
            with raw.cursor() as cursor:
                cursor.execute(f"EXPLAIN ({', '.join(options)}) {captured.statement}", captured.first_parameters)
                row = cursor.fetchone()
        finally:
            raw.rollback()
    assert row is not None
    document = row[0]
    plan: dict[str, Any] = document[0] if isinstance(document, list) else document
    return plan


def plan_nodes(plan: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    stack = [plan.get("Plan", plan)]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.get("Plans", ()))


@dataclass(frozen=True, slots=True)
class IndexVerdict:
    ok: bool
    indexes: tuple[str, ...]  # indexes the plan uses
    seq_scans: tuple[str, ...]  # big tables read by a sequential scan
    tables: tuple[str, ...]  # project tables the plan reads

    def describe(self) -> str:
        if self.seq_scans:
            return f"seq scan of {', '.join(self.seq_scans)}"
        if not self.tables:
            return "no table"
        return f"index {', '.join(self.indexes)}" if self.indexes else "no index (small tables only)"


def index_verdict(plan: Mapping[str, Any], row_counts: Mapping[str, int], *, big_rows: int) -> IndexVerdict:
    """Ok when no big table is read by a sequential scan, and a plan reading a big table uses an index."""
    indexes: list[str] = []
    seq: list[str] = []
    tables: list[str] = []
    big_read = False
    for node in plan_nodes(plan):
        relation = node.get("Relation Name")
        if node.get("Index Name"):
            indexes.append(node["Index Name"])
        if relation in PROJECT_TABLES and node["Node Type"] != "ModifyTable":
            tables.append(relation)
            big = row_counts.get(relation, 0) >= big_rows
            big_read = big_read or big
            if node["Node Type"] == "Seq Scan" and big:
                seq.append(relation)
    uses_index = any(node["Node Type"] in _INDEX_NODES for node in plan_nodes(plan))
    ok = not seq and (uses_index or not big_read)
    return IndexVerdict(ok, tuple(dict.fromkeys(indexes)), tuple(dict.fromkeys(seq)), tuple(dict.fromkeys(tables)))


def namespace_problems(captured: Captured, plan: Mapping[str, Any]) -> list[str]:
    """For a VERBOSE plan of `captured`: each scan of a project table without a `namespace` condition, and each
    insert into one whose statement does not carry `namespace` (in its column list, or all columns by
    `SELECT *`)."""
    problems = []
    for node, joins in _with_join_conditions(plan.get("Plan", plan), ""):
        relation = node.get("Relation Name")
        if relation not in PROJECT_TABLES:
            continue
        if node["Node Type"] == "ModifyTable":
            if node.get("Operation") == "Insert" and not _insert_carries_namespace(captured.statement, relation):
                problems.append(f"insert into {relation} without namespace")
            continue
        own = " ".join(str(node.get(key, "")) for key in _CONDITIONS)
        alias = re.escape(str(node.get("Alias", relation)))
        # its own condition, or a join above it matching this scan's namespace (a hash or merge join)
        if "namespace" not in own and re.search(rf"\b{alias}\.namespace\b", joins) is None:
            problems.append(f"{node['Node Type']} on {relation} without a namespace condition")
    return problems


def _with_join_conditions(node: Mapping[str, Any], above: str) -> Iterator[tuple[Mapping[str, Any], str]]:
    yield node, above
    here = above + " " + " ".join(str(node.get(key, "")) for key in ("Hash Cond", "Merge Cond", "Join Filter"))
    for child in node.get("Plans", ()):
        yield from _with_join_conditions(child, here)


def _insert_carries_namespace(statement: str, relation: str) -> bool:
    match = re.search(rf"INSERT\s+INTO\s+\"?{relation}\"?\s*(\(([^)]*)\))?\s*(\w+)", statement, re.IGNORECASE)
    if match is None:
        return False
    columns, following = match.group(2), match.group(3).upper()
    if columns is not None:
        return re.search(r"\bnamespace\b", columns) is not None
    return (
        following == "SELECT"
        and re.search(rf"INSERT\s+INTO\s+\"?{relation}\"?\s+SELECT\s+\*", statement, re.I) is not None
    )
