"""Row versions (docs/sync.md §8.6): the version of a row read, Postgres's `ctid` and `xmin`, which the digest of a
decision takes instead of the row's columns. Written here once, so that a read that is not digested can drop
every one of them (`without_row_versions`)."""

from __future__ import annotations

import re


def row_version(table: str | None = None) -> str:
    """SQL naming the version of the row read from `table` (None: the only table of the statement's FROM)."""
    qualified = f"{table}." if table else ""
    return f"{qualified}ctid::text || {qualified}xmin::text"


def row_versions(table: str, *joined: str) -> str:
    """SQL naming the versions of a row of `table` and of the outer-joined rows of `joined` ('-' when none)."""
    return " || '/' || ".join([row_version(table), *(f"coalesce({row_version(t)}, '-')" for t in joined)])


_ROW_VERSION = re.compile(r"(?:\w+\.)?ctid::text \|\| (?:\w+\.)?xmin::text")


def without_row_versions(sql: str) -> str:
    """`sql` with every `row_version` as NULL: a read that is not digested pays nothing for them (a credit first
    sync: -5 %, bench/)."""
    return _ROW_VERSION.sub("NULL::text", sql)
