"""`python -m bench --compare REV`: the current tree against a git revision, interleaved in one run.

The revision's files are extracted into a temporary directory (`git archive`), and the *current* `bench/`
package is copied over its own, so both sides are measured by the same benchmark code. Then, for each of `--rounds`
rounds, `python -m bench … --json FILE` runs once in each tree (the current tree first in even rounds,
the revision first in odd ones), against the same database server and Redis, one after the other, so a
change of the machine's load hits both sides alike. Every figure is printed with both sides' medians and
the ratio current / revision: the median of the per-round ratios, with their spread (min–max), and a
two-sided sign test of the rounds against 1; `*` marks p < 0.05 (6 or more rounds all on one side), the
only thing to call stronger than the noise.
"""

from __future__ import annotations

import json
import math
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
    """The files of `rev` at `into` (`git archive`: nothing is registered in the repository, so an interrupted
    run leaves no worktree behind), with the current `bench/` copied over its own."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
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
        trees = {"current": ROOT, rev: other}
        for n in range(rounds):
            order = ["current", rev] if n % 2 == 0 else [rev, "current"]
            for side in order:
                print(f"round {n + 1}/{rounds}: {side} ({machine_load()})", file=log, flush=True)  # type: ignore[call-overload]
                sides[side].append(run_side(trees[side], argv, Path(tmp) / f"{n}-{order.index(side)}.json"))
            if n + 1 < rounds:  # what is known so far, in case the run is cut short
                print(
                    render(rev, sides["current"], sides[rev], loads, time.perf_counter() - began), file=log, flush=True
                )  # type: ignore[call-overload]
    loads.append(machine_load())
    return render(rev, sides["current"], sides[rev], loads, time.perf_counter() - began)


def ratios(current: Sequence[dict[str, float]], other: Sequence[dict[str, float]], name: str) -> list[float]:
    """Per-round ratios current / other of one figure (rounds where both sides have it)."""
    return [a[name] / b[name] for a, b in zip(current, other, strict=True) if name in a and b.get(name)]


def sign_test(ratios: Sequence[float]) -> float:
    """Two-sided sign test of the ratios against 1 (ties dropped): the chance of a split at least this
    lopsided if the change made no difference; 1.0 when every ratio is exactly 1."""
    above = sum(1 for r in ratios if r > 1)
    below = sum(1 for r in ratios if r < 1)
    n = above + below
    if n == 0:
        return 1.0
    k = min(above, below)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return float(min(1.0, 2 * tail))


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
        p = sign_test(r)
        rows.append(
            [
                *(name, f"{b:.3g}", f"{a:.3g}", f"{statistics.median(r):.3f}", f"{low:.3f}–{high:.3f}"),
                f"{p:.3f}" if p < 1 else "-",
                "*" if p < 0.05 else "",
            ]
        )
    out = [
        f"subsync benchmark A/B: current tree against {rev}, {len(current)} interleaved round(s) per side",
        f"machine: {loads[0]} at the start, {loads[-1]} at the end",
        "",
        *table(["figure", rev, "current", "current/rev (median)", "spread (min–max)", "sign test p", ""], rows),
        "",
        "(sign test p: two-sided, of the per-round ratios against 1; * = p < 0.05, which takes 6 or more rounds",
        " all on one side: fewer rounds are a hint, not evidence. Statements and round trips are counts.)",
        "",
        f"A/B ran in {elapsed:.0f} s",
    ]
    return "\n".join(out)
