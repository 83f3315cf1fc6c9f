"""Command output: one JSON document, or tables for people, on stdout (logs go to stderr).

Tables fit the terminal (80 columns included) without splitting an id across lines (docs/contract.md §5):
an id column never wraps; a prefix every id of a column shares is said once under the table; when the
row is still too wide, ids are shortened so that rows stay told apart (`shorten_ids`: the parts every id of
the column shares go first — `…/api-calls/…` —, then the middles of the others: `sub_01J9Z…Q4TZ`;
two distinct ids never print alike) and long text is summarised. Numbers are right-aligned. `--wide`
prints everything in full at its natural width: the terminal wraps or scrolls, nothing is squeezed. Everything printed is text, never rich markup: a customer named
`[/oops]` prints as it is. rich is imported only when a table is printed (start-up speed, issue 14).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from worker.cli.shorten import ELLIPSIS, common_prefix, elide_middle, shorten_ids, summarise

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = ["ELLIPSIS", "common_prefix", "elide_middle", "shorten_ids", "summarise"]  # re-exported: one import


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


FormatOption = Annotated[
    OutputFormat | None,
    typer.Option("--format", help="Output format (default: table on a terminal, json otherwise)."),
]
WideOption = Annotated[
    bool, typer.Option("--wide", help="Tables: print every id and text in full (lines may exceed the terminal).")
]

ColumnKind = Literal["id", "value", "text", "long", "time", "number"]

#: An id keeps at least this many characters when its middle is cut (`head…tail`).
MIN_ID_WIDTH = 15
#: A summarised text keeps at least this many characters.
MIN_TEXT_WIDTH = 12
_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})\.\d+")


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: `id` never wraps (shortened in the middle when room is short, common prefix said
    once), `value` is the same without the common prefix (a record's values), `time` prints to the second and never wraps, `number` is right-aligned, `long` is summarised
    on one line, `text` wraps between words."""

    header: str
    kind: ColumnKind = "text"


@dataclass(frozen=True, slots=True)
class Id:
    """An id cell with text around it that is not part of the id (`└ `, ` (deleted)`)."""

    value: str
    before: str = ""
    after: str = ""
    bold: bool = False


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table to print (`print_spec`): built by `worker.cli.presenters` without importing rich."""

    title: str | None
    columns: Sequence[str | Column]
    rows: Sequence[Sequence[Any]]
    caption: str | None = None


def print_spec(spec: TableSpec, *, wide: bool = False) -> None:
    print_table(spec.title, spec.columns, spec.rows, wide=wide, caption=spec.caption)


def resolve_format(fmt: OutputFormat | None) -> OutputFormat:
    if fmt is not None:
        return fmt
    return OutputFormat.table if _isatty(sys.stdout) else OutputFormat.json


def print_json(data: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit(fmt: OutputFormat | None, data: Any, *, table: Callable[[], None]) -> None:
    """Print `data` as JSON, or call `table()` to render it for people."""
    if resolve_format(fmt) is OutputFormat.json:
        print_json(data)
    else:
        table()


def console(stream: Any = None) -> Console:
    """A rich console on stdout (or `stream`): the terminal's width (`COLUMNS` wins); 240 columns when
    stdout is not a terminal and `COLUMNS` is unset (tables asked for with `--format table` in a pipe)."""
    # lazy: rich costs ~0.1 s of start-up, paid only when a table or a progress bar is printed
    from rich.console import Console

    stream = stream or sys.stdout
    width = None if _isatty(stream) or os.environ.get("COLUMNS") else 240
    return Console(file=stream, soft_wrap=False, width=width, highlight=False, markup=False, emoji=False)


def print_renderable(renderable: RenderableType) -> None:
    console().print(renderable)


def print_table(
    title: str | None,
    columns: Sequence[str | Column],
    rows: Sequence[Sequence[Any]],
    *,
    wide: bool = False,
    caption: str | None = None,
) -> None:
    """Print rows as a table fitted to the terminal (see the module's docstring)."""
    out = console()
    table = build_table(title, columns, rows, width=out.width, wide=wide, caption=caption)
    out.width = shown_width(out, table, wide=wide)  # wider than the terminal only when nothing else fits
    out.print(table)


def shown_width(out: Console, table: Any, *, wide: bool) -> int:
    """The width to render `table` at: its natural width with `--wide` (the terminal wraps or scrolls,
    nothing is squeezed), else the terminal's — or the table's minimum when even that is wider, so that
    an id is never cut by the renderer (`build_table` has already shortened what may be shortened)."""
    # lazy: rich, already loaded by build_table
    from rich.measure import Measurement

    if wide:
        return max(Measurement.get(out, out.options.update_width(1_000_000), table).maximum, out.width)
    return max(getattr(table, "required_width", 0), out.width)


def print_record(title: str | None, data: dict[str, Any], *, times: Sequence[str] = (), wide: bool = False) -> None:
    """One record as a two-column table of fields and values (values never wrap; see `print_table`)."""
    rows = [[key, _FRACTION.sub(r"\1", str(value)) if key in times and value else value] for key, value in data.items()]
    print_table(title, [Column("field"), Column("value", "value")], rows, wide=wide)


def build_table(
    title: str | None,
    columns: Sequence[str | Column],
    rows: Sequence[Sequence[Any]],
    *,
    width: int,
    wide: bool = False,
    caption: str | None = None,
) -> Any:
    """The rich Table of `rows` fitted to `width` columns (every cell is plain text, never markup)."""
    # lazy: rich costs ~0.1 s of start-up, paid only when a table is printed
    from rich import box
    from rich.table import Table
    from rich.text import Text

    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells = [[_cell(value, col.kind) for value, col in zip(row, cols, strict=True)] for row in rows]
    notes: list[str] = []
    required = 0
    if not wide:
        for index, col in enumerate(cols):
            if col.kind != "id":
                continue
            prefix = common_prefix([cell.value for row in cells if isinstance(cell := row[index], Id)])
            if prefix:
                notes.append(f"{col.header}: every id starts with {prefix}")
                for row in cells:
                    cell = row[index]
                    if isinstance(cell, Id):
                        row[index] = Id(cell.value.removeprefix(prefix), cell.before, cell.after, cell.bold)
        gaps = 3 * (len(cols) - 1)  # three characters between columns, no edges
        required = _fit(cols, cells, width - gaps) + gaps

    caption_text = "\n".join(filter(None, [*notes, caption]))
    if not wide:
        title = fit_title(title, width) if title else title
        caption_text = "\n".join(fit_title(line, width) for line in caption_text.splitlines())
    # rich wraps a title or caption to the table's own width: make the table at least as wide as they are
    # (within `width`), so a note like `id: every id starts with …` is never broken inside its id.
    headings = [*(caption_text.splitlines() if caption_text else []), *([title] if title else [])]
    min_width = min(width, max((len(line) for line in headings), default=0)) or None
    table = Table(
        min_width=min_width,
        title=Text(title) if title else None,
        title_justify="left",
        caption=Text(caption_text) if caption_text else None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    for index, col in enumerate(cols):
        if col.kind in ("id", "value", "time", "number") or (col.kind == "text" and _numeric(cells, index)):
            right = col.kind == "number" or col.kind == "text"  # a text column of numbers only is a number column
            table.add_column(col.header, no_wrap=True, overflow="ellipsis", justify="right" if right else "left")
        elif col.kind == "long" and not wide:
            table.add_column(col.header, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(col.header, overflow="fold")
    table.required_width = required  # type: ignore[attr-defined]  # read by shown_width
    for row in cells:
        texts = []
        for cell in row:
            if isinstance(cell, Id):
                text = Text(cell.before)
                text.append(cell.value, style="bold" if cell.bold else "")
                text.append(cell.after)
                texts.append(text)
            else:
                texts.append(Text(cell))
        table.add_row(*texts)
    return table


def _cell(value: Any, kind: ColumnKind) -> Id | str:
    if isinstance(value, Id):
        return value
    if value is None:
        return "" if kind != "id" else Id("")
    if isinstance(value, datetime):
        value = _second(value)
    text = str(value)
    if kind in ("id", "value"):
        return Id(text)
    if kind == "time":
        return _FRACTION.sub(r"\1", text)
    return text


def _second(value: datetime) -> str:
    # lazy: the contract's time format, needed only when a table prints a time
    from worker.contract.text import format_time

    return format_time(value.replace(microsecond=0))


def _shown_width(cell: Id | str) -> int:
    if isinstance(cell, Id):
        return len(cell.before) + len(cell.value) + len(cell.after)
    return max((len(line) for line in cell.splitlines()), default=0)


def _fit(cols: Sequence[Column], cells: list[list[Id | str]], room: int) -> int:
    """Narrow columns until the widest row fits in `room`: first the long-text columns (summarised) and
    the text columns (they wrap between words, down to their longest word), then — only when that is not
    enough — the id columns (`shorten_ids`, never below `MIN_ID_WIDTH`). Returns the room the narrowed
    columns need (more than `room` when even that does not fit: the table is then printed wider, never
    squeezed by the renderer)."""
    widths = [max([len(c.header), *(_shown_width(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    natural = list(widths)
    floors = {
        i: max(MIN_TEXT_WIDTH if c.kind == "long" else MIN_ID_WIDTH, len(c.header))
        for i, c in enumerate(cols)
        if c.kind in ("long", "id", "value")
    }
    for i, c in enumerate(cols):
        if c.kind == "text":
            words = [len(w) for row in cells if isinstance(row[i], str) for w in str(row[i]).split()]
            # wrapped in at most about two lines: a period `2026-10-01 → 2026-11-01` keeps its arrow line
            floors[i] = max([*words, *(len(w) for w in c.header.split()), (widths[i] + 1) // 2, 1])
    excess = sum(widths) - room
    for phase in (("long", "text"), ("id", "value")):  # ids shrink last: they tell rows apart
        while excess > 0:
            candidates = [i for i, floor in floors.items() if widths[i] > floor and cols[i].kind in phase]
            if not candidates:
                break
            index = max(candidates, key=lambda i: widths[i] - floors[i])
            second = max((widths[i] - floors[i] for i in candidates if i != index), default=0)
            step = min(excess, widths[index] - floors[index] - second) or 1
            widths[index] -= step
            excess -= step
    for index, width in enumerate(widths):
        if width >= natural[index] or cols[index].kind == "text":  # text wraps in the renderer
            continue
        if cols[index].kind in ("id", "value"):
            ids = [cell for row in cells if isinstance(cell := row[index], Id)]
            extra = max((len(c.before) + len(c.after) for c in ids), default=0)
            short = shorten_ids([c.value for c in ids], max(width - extra, MIN_ID_WIDTH))
        for row in cells:
            cell = row[index]
            if isinstance(cell, Id) and cols[index].kind in ("id", "value"):
                row[index] = Id(short[cell.value], cell.before, cell.after, cell.bold)
            else:
                row[index] = _shorten(cell, width)
    return sum(
        widths[i] if c.kind == "text" else max([len(c.header), *(_shown_width(row[i]) for row in cells)])
        for i, c in enumerate(cols)
    )


def fit_title(text: str, width: int) -> str:
    """A title or caption whose long words (ids) are shortened in the middle to fit `width`."""
    return " ".join(elide_middle(word, max(width, MIN_ID_WIDTH)) for word in text.split(" "))


def _shorten(cell: Id | str, width: int) -> Id | str:
    if isinstance(cell, Id):
        room = max(width - len(cell.before) - len(cell.after), MIN_ID_WIDTH)
        return Id(elide_middle(cell.value, room), cell.before, cell.after, cell.bold)
    return summarise(cell, width)


_NUMBER = re.compile(r"-?\d[\d,]*(\.\d+)?%?\Z")


def _numeric(cells: Sequence[Sequence[Id | str]], index: int) -> bool:
    """Whether a column holds numbers only (`-` and empty cells aside): it is then right-aligned."""
    column = [row[index] for row in cells]
    numbers = [c for c in column if c not in ("", "-")]
    return bool(numbers) and all(isinstance(c, str) and _NUMBER.match(c) for c in numbers)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
