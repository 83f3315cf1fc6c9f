"""Tables that never hide what tells rows apart (issue 24, docs/contract.md §5): ids are shortened common
parts first and distinct identities always print distinct; `--wide` prints in full, unsqueezed; numbers are
right-aligned."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from worker.cli.output import ELLIPSIS, Column, build_table, shorten_ids, shown_width


def render(table: Any, width: int, *, wide: bool = False) -> list[str]:
    """What `print_table` prints on a terminal of `width` columns, as lines."""
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, markup=False)
    console.width = shown_width(console, table, wide=wide)
    console.print(table)
    return out.getvalue().splitlines()


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=24)
identity = st.builds(
    lambda sub, phase, item, version, period: f"{sub}/{phase}/{item}/v[{version}]/period[{period}]",
    st.sampled_from(["sub_01", "subscription-of-a-long-enterprise-customer"]),
    st.sampled_from(["launch", "growth", "default"]),
    _word,
    st.integers(0, 3),
    st.integers(0, 40),
)
ulid = st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=20, max_size=26).map(lambda s: "ln_01J9Z" + s)


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(st.one_of(identity, ulid), min_size=2, max_size=25, unique=True),
    width=st.integers(60, 200),
)
def test_distinct_identities_render_as_distinct_cells(ids: list[str], width: int) -> None:
    rows = [[value, "2024-01-01 → 2024-02-01", "flat 100", str(n)] for n, value in enumerate(ids)]
    columns = [Column("line", "id"), Column("service period", "text"), Column("price", "number"), Column("n")]
    lines = render(build_table(None, columns, rows, width=width), width)
    starts = [line for line in lines[2:] if line and not line.startswith(" ")]  # a row's first line
    cells = [line.split()[0] for line in starts[: len(ids)]]  # the caption (a prefix said once) follows
    assert len(cells) == len(ids)
    assert len(set(cells)) == len(ids), cells  # pairwise distinct: no two rows print the same identity
    assert all(len(line) <= width for line in lines), lines  # and nothing is cut by the renderer either


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.one_of(identity, ulid, _word), min_size=1, max_size=30, unique=True), width=st.integers(15, 80))
def test_shortened_ids_stay_distinct_and_keep_their_pieces_in_order(ids: list[str], width: int) -> None:
    short = shorten_ids(ids, width)
    assert len(set(short.values())) == len(ids)
    for value, shown in short.items():
        pieces = shown.split(ELLIPSIS)
        assert value.startswith(pieces[0]) and value.endswith(pieces[-1])
        assert shown == value or len(shown) < len(value)


def test_the_part_that_tells_rows_apart_shows() -> None:
    ids = [
        "launch/api-calls/v[0]/period[0]",
        "launch/platform-fee/v[0]/period[0]",
        "launch/platform-fee/v[1]/period[0]",
    ]
    short = shorten_ids(ids, 24)
    assert "api-calls" in short[ids[0]] and "platform-fee" in short[ids[1]]  # the common parts went first
    assert all(len(s) <= 24 for s in short.values()) and len(set(short.values())) == 3
    assert "v[1]" in short[ids[2]] and "v[0]" in short[ids[1]]  # the version tells the last two apart


def test_wide_prints_in_full_and_never_squeezes() -> None:
    long_id = "subscription-of-a-long-enterprise-customer/launch/platform-fee/v[0]/period[12]"
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [[long_id, at, "x" * 120, "12.50"]]
    columns = [Column("line", "id"), Column("at", "time"), Column("note", "long"), Column("amount", "number")]
    lines = render(build_table("t", columns, rows, width=80, wide=True), 80, wide=True)
    text = "\n".join(lines)
    assert long_id in text and "2024-01-02T03:04:05Z" in text and "x" * 120 in text
    assert max(len(line) for line in lines) > 80  # the terminal wraps or scrolls; nothing was squeezed
    narrow = "\n".join(render(build_table("t", columns, rows, width=80), 80))
    assert "2024-01-02T03:04:05Z" in narrow and all(len(line) <= 80 for line in narrow.splitlines())


def test_numbers_are_right_aligned() -> None:
    rows = [["a", "5", "x"], ["b", "1250.75", "yy"], ["c", "-", "z"]]
    lines = render(build_table(None, ["name", "amount", "text"], rows, width=80), 80)
    amounts = [line[: line.rindex(text) - 3].rstrip() for line, text in zip(lines[2:], ["x", "yy", "z"], strict=True)]
    assert len({len(a) for a in amounts}) == 1  # every amount ends in the same column
    assert lines[0].split()[1] == "amount" and lines[0].index("amount") + 6 == len(amounts[0])
