"""Bulk apply (docs/contract.md §5), shared by `subscriptions apply` and `customers apply`: the records named
by FILE arguments (files, folders, `-` for stdin; one JSON object, or JSON lines), each validated and applied
in its own transaction by the command's `apply_one`, with a progress bar and a per-record report; the
command exits 1 naming the records that failed (valid ones are applied all the same)."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.cli.output import Column, OutputFormat, emit, print_table
from worker.cli.progress import progress
from worker.errors import InvalidInputError, SubsyncError


@dataclass(frozen=True, slots=True)
class Source:
    """One record to apply: where it came from (`docs/a.json`, `stdin:3`, `c.jsonl:2`) and its bytes."""

    name: str
    raw: bytes | None  # None: it could not be read (`error` says why)
    error: str | None = None


def read(path: Path | None, limit: int) -> bytes:
    try:
        if path is None:
            return sys.stdin.buffer.read()
        with path.open("rb") as handle:
            return handle.read(limit + 1)  # one byte more: a larger record is refused
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path or 'stdin'}: {exc.strerror or exc}") from None


def sources(
    files: Sequence[str], limit: int, *, patterns: Sequence[str] = ("*.json",), lines_in_files: bool = False
) -> tuple[list[Source], bool]:
    """The records named by FILE arguments, and whether this is a bulk apply (several files, a folder, or
    several JSON lines) rather than one record. A folder is read for `patterns`; stdin (and each file when
    `lines_in_files`) holds one JSON value, possibly over several lines, or JSON lines."""
    found: list[Source] = []
    bulk = len(files) > 1
    for file in files:
        if file == "-":
            records = split_lines(read(None, limit), "stdin")
            bulk = bulk or len(records) != 1
            found += records
            continue
        path = Path(file)
        if path.is_dir():
            bulk = True
            found += _folder_sources(path, limit, patterns, lines_in_files)
            continue
        if not bulk and not lines_in_files:  # one file: read errors are a usage error, as before
            found.append(Source(file, read(path, limit)))
            continue
        records = _file_sources(path, limit, lines_in_files) if bulk else split_lines(read(path, limit), file)
        bulk = bulk or len(records) != 1
        found += records
    return found, bulk


def _file_sources(path: Path, limit: int, lines_in_files: bool) -> list[Source]:
    try:
        raw = read(path, limit)
    except InvalidInputError as exc:
        return [Source(str(path), None, str(exc))]
    return split_lines(raw, str(path)) if lines_in_files else [Source(str(path), raw)]


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


def _folder_sources(folder: Path, limit: int, patterns: Sequence[str], lines_in_files: bool) -> list[Source]:
    """A folder's entries matching `patterns`, in name order (docs/contract.md §5). A regular file (symlinks
    followed) is read; any other entry — a dangling symlink, a symlink loop, a FIFO (never opened: it would
    block), a directory — is a failed entry saying why, never skipped silently."""
    found: list[Source] = []
    for entry in sorted({p for pattern in patterns for p in folder.glob(pattern)}):
        try:
            mode = entry.stat().st_mode
        except OSError as exc:  # a dangling symlink (ENOENT), a symlink loop (ELOOP), no permission
            found.append(Source(str(entry), None, f"cannot read {entry}: {exc.strerror or exc}"))
            continue
        if stat.S_ISREG(mode):
            found += _file_sources(entry, limit, lines_in_files)
        else:
            kind = "a directory" if stat.S_ISDIR(mode) else _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            found.append(Source(str(entry), None, f"cannot read {entry}: it is {kind}, not a file"))
    return found


def split_lines(raw: bytes, name: str) -> list[Source]:
    """`raw` holds one JSON document (possibly over several lines) or JSON lines (one per line)."""
    try:
        json.loads(raw)
    except RecursionError:  # nested too deep for one document: the record's parser refuses it (exit 2)
        return [Source(name, raw)]
    except ValueError:
        lines = [(n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
        if len(lines) > 1:
            return [Source(f"{name}:{n}", line) for n, line in lines]
    return [Source(name, raw)]


#: What `apply_one` returns for an applied record: its result (`created`, `replaced`, `updated`) and the
#: fields the report shows for it (`namespace`, `id`).
Applied = dict[str, Any]


def _apply_safely(apply_one: Callable[[Source], Applied], source: Source) -> tuple[Applied | None, list[str]]:
    """One record in its own transaction: (applied, []) or (None, error lines); never raises for a record."""
    # lazy: the exception reports import SQLAlchemy's and redis' exception types
    from worker.cli.errors import error_report

    if source.raw is None:
        return None, [source.error or "cannot read"]
    try:
        return apply_one(source), []
    except SubsyncError as exc:
        return None, exc.report()
    except Exception as exc:  # a database failure of this record: report it, go on with the next
        return None, error_report(exc)[1]


def apply_all(
    found: Sequence[Source],
    apply_one: Callable[[Source], Applied],
    *,
    command: str,
    noun: str,
    identity: str,
    fmt: OutputFormat | None,
    wide: bool,
) -> None:
    """Apply every record in its own transaction, with progress; print the report (`{"applied", "failed",
    noun + "s": [{"source", "result", "namespace", "id"} | {"source", "result": "failed", "errors"}]}`)
    and exit 1 naming the failed ones (`BulkFailed`)."""
    if not found:
        raise InvalidInputError(f"no {noun}s to apply (a folder is read for its *.json files)")
    report: list[dict[str, Any]] = []
    with progress("applying", len(found)) as advance:
        for source in found:
            applied, errors = _apply_safely(apply_one, source)
            if applied is None:
                report.append({"source": source.name, "result": "failed", "errors": errors})
            else:
                report.append({"source": source.name, **applied})
            advance(1)
    failed = [e["source"] for e in report if e["result"] == "failed"]
    data = {"applied": len(report) - len(failed), "failed": len(failed), f"{noun}s": report}

    def table() -> None:
        rows = [
            [
                e["source"],
                e["result"],
                f"{e['namespace']}/{e['id']}" if "id" in e else "",
                "\n".join(e.get("errors", [])),
            ]
            for e in report
        ]
        columns = [Column(noun, "id"), Column("result"), Column(identity, "id"), Column("errors")]
        summary = f"{data['applied']} applied, {data['failed']} failed"
        print_table(f"{command}: {summary}", columns, rows, wide=wide)

    emit(fmt, data, table=table)
    if failed:  # the report is on stdout; which ones failed is said on stderr too
        raise BulkFailed(failed, noun)


class BulkFailed(SubsyncError):
    """Some records of a bulk apply failed (the report printed says why)."""

    def __init__(self, failed: list[str], noun: str) -> None:
        shown = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
        super().__init__(f"{len(failed)} {noun}(s) failed: {shown}")
