"""Text shortened to fit a table cell (docs/contract.md §5): ids keep what tells them apart from the other
ids of their column (`shorten_ids`), text is summarised on one line, a prefix every id shares is found to
be said once. Pure functions of strings: `worker.cli.output` decides the widths."""

from __future__ import annotations

import re
from collections.abc import Sequence

#: A prefix shared by every id of a column is said once when it is at least this long.
MIN_PREFIX = 8
ELLIPSIS = "…"
_SEPARATORS = "/:_.-"

_SEGMENT = re.compile(r"([/:])")


def shorten_ids(values: Sequence[str], width: int) -> dict[str, str]:
    """Each of `values` shortened to at most `width` characters where it can be, **distinct values staying
    distinct** (docs/contract.md §5: the part of an identity that tells rows apart always shows).

    An id is cut into segments at `/` and `:`; a segment every id of the column has at the same place
    (`launch`, `v[0]`, `period[0]` of `launch/api-calls/v[0]/period[0]`) tells no row apart and goes first,
    longest first, each becoming `…`; then the longest remaining segments lose their middle. When that
    would print two ids alike, the width grows one character at a time until it does not (in full, at
    worst, so distinct ids always print distinct)."""
    unique = sorted(set(values))
    longest = max((len(v) for v in unique), default=0)
    if longest <= width:
        return {v: v for v in unique}
    split = {v: _SEGMENT.split(v) for v in unique}
    common: set[tuple[int, str]] = set()
    if len(unique) > 1:
        first = split[unique[0]]
        common = {
            (i, part)
            for i, part in enumerate(first)
            if i % 2 == 0 and part and all(len(p) > i and p[i] == part for p in split.values())
        }
    for index, _part in sorted(common, key=lambda c: (-len(c[1]), c[0])):  # the same for every id of the column
        if max(sum(len(p) for p in parts) for parts in split.values()) <= width:
            break
        for parts in split.values():
            parts[index] = ELLIPSIS
    head, tail = _shared_ends(unique)
    ends = {i: _shared_ends([p[i] for p in split.values() if len(p) > i]) for i in range(0, longest, 2)}
    for room in range(max(width, 1), longest + 1):
        for by_segment in (True, False):
            short = {v: _squeeze(split[v], room, ends) if by_segment else _around(v, head, tail, room) for v in unique}
            if len(set(short.values())) == len(unique):
                return short
    return {v: v for v in unique}


def _shared_ends(values: Sequence[str]) -> tuple[int, int]:
    """How long a prefix, and then a suffix, every one of `values` shares (0, 0 for fewer than two)."""
    if len(set(values)) < 2:
        return 0, 0
    head = _shared_prefix(values)
    return head, _shared_prefix([v[head:][::-1] for v in values])


def _shared_prefix(values: Sequence[str]) -> int:
    """How many leading characters every one of `values` shares."""
    low, high = min(values), max(values)  # what the smallest and the largest share, everyone shares
    return next((i for i, (a, b) in enumerate(zip(low, high, strict=False)) if a != b), min(len(low), len(high)))


def _squeeze(segments: list[str], width: int, ends: dict[int, tuple[int, int]]) -> str:
    """One id's segments (separators at odd places) in at most `width` characters: the longest segments
    shrink first, each keeping what differs from the same segment of the column's other ids."""
    parts = list(segments)
    done: set[int] = set()

    def size() -> int:
        return sum(len(p) for p in parts)

    while size() > width:
        open_ = [i for i in range(0, len(parts), 2) if i not in done and len(parts[i]) > 3]
        if not open_:
            break
        index = max(open_, key=lambda i: (len(parts[i]), -i))
        second = max((len(parts[i]) for i in open_ if i != index), default=0)  # shrink evenly
        target = max(len(parts[index]) - (size() - width), min(second, len(parts[index]) - 1), 3)
        head, tail = ends.get(index, (0, 0))
        shorter = _around(segments[index], head, tail, target)
        if len(shorter) >= len(parts[index]):
            done.add(index)
        else:
            parts[index] = shorter
    text = "".join(parts)
    return text if len(text) <= width else elide_middle(text, width)


def _around(value: str, head: int, tail: int, width: int) -> str:
    """`value` in at most `width` characters keeping what differs from the column's other ids: the
    characters after the prefix (`head` long) and before the suffix (`tail` long) every id shares; the
    shared ends are cut from the inside (`p…0]` for `period[0]` among `period[N]`)."""
    if len(value) <= width:
        return value
    core = value[head : len(value) - tail]
    room = width - len(core) - (head > 0) - (tail > 0)
    if room < 0 or not core:
        return elide_middle(value, width)
    after = min(tail, (room + 1) // 2)
    before = min(head, room - after)
    after = min(tail, room - before)
    text = value[:before] + (ELLIPSIS if head > before else "") + core
    return text + (ELLIPSIS if tail > after else "") + (value[len(value) - after :] if after else "")


def elide_middle(value: str, width: int) -> str:
    """`value` in at most `width` characters: its start and end around an ellipsis."""
    if len(value) <= width:
        return value
    keep = max(width - 1, 2)
    head = (keep + 1) // 2
    return value[:head] + ELLIPSIS + value[len(value) - (keep - head) :]


def summarise(text: str, width: int) -> str:
    """The first line of `text` in at most `width` characters (an ellipsis marks what was left out)."""
    lines = text.splitlines() or [""]
    first = lines[0]
    if len(first) <= width and len(lines) == 1:
        return first
    return first[: max(width - 1, 1)] + ELLIPSIS


def common_prefix(values: Sequence[str]) -> str:
    """The prefix every value shares, cut after its last separator (`/ : _ . -`), when it is at least
    `MIN_PREFIX` characters and leaves something of every value; else ''."""
    present = [v for v in values if v]
    if len(present) < 2:
        return ""
    prefix = min(present)  # the common prefix of the smallest and largest value is everyone's
    last = max(present)
    prefix = prefix[: next((i for i, (a, b) in enumerate(zip(prefix, last, strict=False)) if a != b), len(prefix))]
    cut = max(prefix.rfind(s) for s in _SEPARATORS)
    prefix = prefix[: cut + 1] if cut >= 0 else ""
    if len(prefix) < MIN_PREFIX or any(v == prefix for v in present):
        return ""
    return prefix
