"""`python -m bench --compare REV`: the current tree against a git revision, interleaved in one run.

The revision is checked out into a temporary git worktree, and the *current* `bench/` package is copied
over its own, so both sides are measured by the same benchmark code. Then, for each of `--rounds`
rounds, `python -m bench … --json FILE` runs once in each tree (the current tree first in even rounds,
the revision first in odd ones), against the same database server and Redis, one after the other, so a
change of the machine's load hits both sides alike. Every figure is printed with both sides' medians and
the ratio current / revision: the median of the per-round ratios, with their spread (min–max). A ratio
whose whole spread lies on one side of 1 is marked `*` (with at least 3 rounds: stronger than the noise).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.queue_report import machine_load

ROOT = Path(__file__).resolve().parents[1]


def checkout(rev: str, into: Path) -> Path:
    """A detached worktree of `rev` at `into`, with the current `bench/` copied over its own."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), rev], check=True, capture_output=True
    )
    shutil.rmtree(into / "bench", ignore_errors=True)
    shutil.copytree(ROOT / "bench", into / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def run_side(tree: Path, argv: Sequence[str], json_path: Path) -> dict[str, float]:
    """One benchmark run in `tree` (its code first on the path: the workers and commands it starts too)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "bench", *without_compare(argv), "--json", str(json_path)]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark failed in {tree}:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(json_path.read_text())
    return figures


def without_compare(argv: Sequence[str]) -> list[str]:
    """The benchmark's own options of a `--compare` command line (without `--compare`, `--rounds`, `--json`)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--compare", "--rounds", "--json"):
            skip = True
        elif not arg.startswith(("--compare=", "--rounds=", "--json=")):
            out.append(arg)
    return out


def compare(rev: str, argv: Sequence[str], rounds: int, *, log: object = sys.stderr) -> str:
    began = time.perf_counter()
    sides: dict[str, list[dict[str, float]]] = {"current": [], rev: []}
    loads = [machine_load()]
    with tempfile.TemporaryDirectory(prefix="subsync-compare-") as tmp:
        other = Path(tmp) / "tree"
        checkout(rev, other)
        try:
            trees = {"current": ROOT, rev: other}
            for n in range(rounds):
                order = ["current", rev] if n % 2 == 0 else [rev, "current"]
                for side in order:
                    print(f"round {n + 1}/{rounds}: {side} ({machine_load()})", file=log, flush=True)  # type: ignore[call-overload]
                    sides[side].append(run_side(trees[side], argv, Path(tmp) / f"{n}-{order.index(side)}.json"))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)
    loads.append(machine_load())
    return render(rev, sides["current"], sides[rev], loads, time.perf_counter() - began)


def ratios(current: Sequence[dict[str, float]], other: Sequence[dict[str, float]], name: str) -> list[float]:
    """Per-round ratios current / other of one figure (rounds where both sides have it)."""
    return [a[name] / b[name] for a, b in zip(current, other, strict=True) if name in a and b.get(name)]


def render(
    rev: str,
    current: Sequence[dict[str, float]],
    other: Sequence[dict[str, float]],
    loads: Sequence[str],
    elapsed: float,
) -> str:
    from bench.report import table

    names = [n for n in current[0] if any(n in o for o in other)] if current else []
    rows = []
    for name in names:
        r = ratios(current, other, name)
        a = statistics.median(c[name] for c in current if name in c)
        b = statistics.median(o[name] for o in other if name in o)
        if not r:
            continue
        low, high = min(r), max(r)
        clear = len(r) >= 3 and (high < 1 or low > 1)
        rows.append(
            [name, f"{b:.3g}", f"{a:.3g}", f"{statistics.median(r):.3f}", f"{low:.3f}–{high:.3f}", "*" if clear else ""]
        )
    out = [
        f"subsync benchmark A/B: current tree against {rev}, {len(current)} interleaved round(s) per side",
        f"machine: {loads[0]} at the start, {loads[-1]} at the end",
        "",
        *table(["figure", rev, "current", "current/rev (median)", "spread (min–max)", ""], rows),
        "",
        "(* = every round's ratio on the same side of 1, with 3 or more rounds; statements and round trips are",
        " counts: a ratio of 1.000 means equal)",
        "",
        f"A/B ran in {elapsed:.0f} s",
    ]
    return "\n".join(out)
