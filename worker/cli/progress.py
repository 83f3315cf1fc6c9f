"""Progress for people, on stderr: a rich progress bar when stderr is a terminal (nothing otherwise, so
pipes and logs stay clean), and the named steps of a longer command (`subsync demo`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; a transient progress bar of `total` steps is drawn on a terminal's stderr."""
    if not _isatty(sys.stderr) or total <= 1:
        yield lambda n: None
        return
    # lazy: rich costs ~0.1 s of start-up, paid only when a bar is drawn
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    task = bar.add_task(label, total=total)
    with bar:
        yield lambda n: bar.advance(task, n)


class Steps:
    """Numbered steps of a command on stderr: `[2/4] migrating the database`."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    def __call__(self, text: str) -> None:
        self.done += 1
        sys.stderr.write(f"[{self.done}/{self.total}] {text}\n")
        sys.stderr.flush()
