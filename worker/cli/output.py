"""Command output: one JSON document, or tables for people, on stdout (logs go to stderr)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


FormatOption = Annotated[
    OutputFormat | None,
    typer.Option("--format", help="table or json (default: table on a terminal, json otherwise)."),
]


def resolve_format(fmt: OutputFormat | None) -> OutputFormat:
    if fmt is not None:
        return fmt
    return OutputFormat.table if _isatty(sys.stdout) else OutputFormat.json


def print_json(data: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    # Off a terminal rich assumes 80 columns; give piped tables room instead of folding ids.
    width = None if _isatty(sys.stdout) else 240
    Console(file=sys.stdout, soft_wrap=False, width=width).print(table)


def print_renderable(renderable: Any) -> None:
    """Print a rich renderable (a table built elsewhere) like `print_table` does."""
    width = None if _isatty(sys.stdout) else 240
    Console(file=sys.stdout, soft_wrap=False, width=width).print(renderable)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def emit(fmt: OutputFormat | None, data: Any, *, table: Callable[[], None]) -> None:
    """Print `data` as JSON, or call `table()` to render it for people."""
    if resolve_format(fmt) is OutputFormat.json:
        print_json(data)
    else:
        table()
