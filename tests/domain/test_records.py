"""`worker.domain.records.value` (docs/performance.md "Values built without the frozen __init__"): values compare,
hash and copy like frozen dataclasses at run time, and the type checker refuses any assignment to them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from mypy import api

from worker.domain.timeutil import Period

T1, T2, T3 = (datetime(2024, m, 1, tzinfo=UTC) for m in (1, 2, 3))


def test_a_value_compares_hashes_and_copies_by_value() -> None:
    a, b = Period(T1, T2), Period(T1, T2)
    assert a == b and hash(a) == hash(b) and a is not b
    assert {a: "x"}[b] == "x"
    c = dataclasses.replace(a, end=T3)
    assert c == Period(T1, T3) and a.end == T2
    assert not hasattr(a, "__dict__")  # slotted: no attribute can be added either


def test_the_type_checker_refuses_assigning_to_a_value(tmp_path: Path) -> None:
    snippet = tmp_path / "assign.py"
    snippet.write_text(
        "from datetime import UTC, datetime\n"
        "from worker.domain.timeutil import Period\n"
        "p = Period(datetime.now(UTC), datetime.now(UTC))\n"
        "p.start = datetime.now(UTC)\n"
    )
    # mypy's own cache may name the snippet by an earlier run's path: the line and the message are what count
    out, _, status = api.run([str(snippet), "--strict", "--no-error-summary"])
    assert status == 1, out
    assert "assign.py:4: error" in out and 'Property "start" defined in "Period" is read-only' in out, out
