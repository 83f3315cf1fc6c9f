"""The README and docs/ stay true (issue 24): the README is short, every `subsync …` command they show
exists (its `--help` runs), the README's command table covers exactly the CLI's commands, and every test
they cite exists (`tests/…` paths, and the `file.py::test_name` entries of docs/guarantees.md)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from worker.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
runner = CliRunner()


def _root() -> Any:
    """The click group of `subsync` (typer's click: groups are told by their `commands`)."""
    return typer.main.get_command(app)


def _is_group(command: Any) -> bool:
    return hasattr(command, "commands")


def _leaves(group: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every command of the CLI as its path of words (`("charges", "list")`)."""
    out: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        if _is_group(command):
            out |= _leaves(command, (*prefix, name))
        else:
            out.add((*prefix, name))
    return out


def _resolve(words: list[str]) -> tuple[str, ...]:
    """The command path the words after `subsync` name; fails on an unknown subcommand of a group."""
    command = _root()
    path: list[str] = []
    for word in words:
        if not _is_group(command) or word.startswith("-") or word.isupper() or "…" in word:  # an option, a placeholder
            break
        if "|" in word:  # `charges list|advance|set-quantity`: each must exist
            alternatives = word.replace("\\", "").split("|")
            assert all(a in command.commands for a in alternatives), f"`subsync {' '.join([*path, word])}`"
            return (*path, alternatives[0])
        assert word in command.commands, f"`subsync {' '.join([*path, word])}`: {word!r} is not a command"
        command = command.commands[word]
        path.append(word)
    return tuple(path)


def _shown_commands() -> dict[tuple[str, ...], str]:
    """Every `subsync …` command line the README and docs/*.md show (code blocks and inline code)."""
    shown: dict[tuple[str, ...], str] = {}
    for doc in DOCS:
        text = doc.read_text()
        lines = [
            line for block in re.findall(r"```(?:sh|bash)\n(.*?)```", text, flags=re.S) for line in block.splitlines()
        ]
        lines += re.findall(r"`(subsync [^`]+)`", text)
        for line in lines:
            line = line.strip()
            if not line.startswith("subsync ") or "…" in line.split()[1]:
                continue
            words = line.split("#")[0].split()[1:]
            shown[_resolve(words)] = f"{doc.name}: {line}"
    return shown


def test_the_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_every_command_the_docs_show_exists_and_has_help() -> None:
    shown = _shown_commands()
    assert len(shown) > 20  # the README's table, the first subscription, operations.md's examples
    for path, where in shown.items():
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (where, result.output)


def _table_commands() -> set[tuple[str, ...]]:
    """The commands of the README's `## Commands` table: `subsync a b` / `c` (c is a sibling of b)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("\n## Commands\n") :]
    table = table[: table.index("\n## ", 1)]
    found: set[tuple[str, ...]] = set()
    for row in re.findall(r"^\| (`subsync [^|]+) \|", table, flags=re.M):
        spans = re.findall(r"`([^`]+)`", row)
        first = _resolve(spans[0].split()[1:])
        found.add(first)
        for span in spans[1:]:
            words = span.split()
            found.add(_resolve([*first[:-1], *words]) if words[0] not in _root().commands else _resolve(words))
    return found


def test_the_readme_command_table_lists_every_command_of_the_cli() -> None:
    listed = _table_commands()
    leaves = _leaves(_root())
    missing = {" ".join(p) for p in leaves if not any(p[: len(entry)] == entry for entry in listed)}
    assert not missing, f"add these to the README's command table: {sorted(missing)}"
    unknown = {" ".join(p) for p in listed if not any(leaf[: len(p)] == p for leaf in leaves)}
    assert not unknown


def test_every_cited_test_exists() -> None:
    cited = 0
    for doc in DOCS:
        for path in re.findall(r"\btests/[\w/.-]+\.py", doc.read_text()):
            assert (ROOT / path).is_file(), f"{doc.name} cites {path}, which does not exist"
            cited += 1
    assert cited


def test_every_guarantee_names_a_test_that_exists() -> None:
    """docs/guarantees.md: `file.py::test_name` (relative to tests/), and `::test_other` of the same file."""
    text = (ROOT / "docs" / "guarantees.md").read_text()
    names = 0
    for row in re.findall(r"^\|.*\| (`[^|]*`) \|$", text, flags=re.M):
        current: Path | None = None
        for span in re.findall(r"`([^`]+)`", row):
            file, _, test = span.partition("::")
            if file:
                if not file.endswith(".py"):
                    continue
                current = ROOT / "tests" / file
                assert current.is_file(), f"guarantees.md cites tests/{file}, which does not exist"
            if test:
                assert current is not None, span
                assert re.search(rf"def {re.escape(test)}\(", current.read_text()), f"{span}: no such test"
                names += 1
    assert names > 40


def _importable(name: str) -> bool:
    """Whether `worker.a.b` names a module, or an attribute of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_every_python_name_and_source_file_the_docs_cite_exists() -> None:
    """`worker.events.publish(event)` is callable as written (issue 24 found `worker.queue.publish.publish`
    promised where the contract says `worker.events.publish`); `worker/…` files exist."""
    for doc in DOCS:
        text = doc.read_text()
        for name in re.findall(r"`(worker(?:\.\w+)+)(?:\([^`]*\))?`", text):
            assert _importable(name), f"{doc.name} names {name}, which does not exist"
        for path in re.findall(r"`(worker/[\w/]+\.py)`", text):
            assert (ROOT / path).is_file(), f"{doc.name} cites {path}, which does not exist"
