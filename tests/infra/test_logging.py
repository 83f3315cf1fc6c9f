"""Log lines (worker/infra/logging.py): one timestamp format, no null fields, the message id inside a message."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.infra.logging import bind_message_id, configure_logging, format_log_time, get_logger

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure_logging("json")
    try:
        yield capsys
    finally:
        bind_message_id(None)
        configure_logging("console")  # as tests/conftest.py set it


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


@given(st.datetimes(timezones=st.just(UTC)))
def test_the_timestamp_format_is_utc_milliseconds_and_z(moment: datetime) -> None:
    text = format_log_time(moment)
    assert TIMESTAMP.fullmatch(text)
    assert datetime.fromisoformat(text) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_our_lines_and_library_lines_share_the_format_without_null_fields(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    get_logger("worker.test").info("ours", kept=0, dropped=None, empty="")
    logging.getLogger("dramatiq.worker.WorkerThread").warning("theirs %s", "formatted")
    ours, theirs = lines(json_logs)
    assert ours["event"] == "ours" and ours["kept"] == 0 and ours["empty"] == "" and "dropped" not in ours
    assert theirs["event"] == "theirs formatted" and theirs["logger"] == "dramatiq.worker.WorkerThread"
    for line in (ours, theirs):
        assert TIMESTAMP.fullmatch(str(line["timestamp"]))
        assert None not in line.values()


def test_inside_a_message_every_line_carries_its_id(json_logs: pytest.CaptureFixture[str]) -> None:
    bind_message_id("m-1")
    logging.getLogger("dramatiq.middleware.retries.Retries").info("Retrying message %r.", "m-1")
    get_logger("worker.test").info("ours")
    get_logger("worker.test").info("explicit", message_id="other")  # a field given wins
    bind_message_id(None)
    logging.getLogger("dramatiq.worker.WorkerThread").info("between messages")
    retrying, ours, explicit, between = lines(json_logs)
    assert retrying["message_id"] == ours["message_id"] == "m-1"
    assert explicit["message_id"] == "other"
    assert "message_id" not in between


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO])
def test_enabled_for_says_whether_a_line_at_that_level_is_written(
    json_logs: pytest.CaptureFixture[str], level: int
) -> None:
    configure_logging("json", level=level)
    log = get_logger("worker.test.enabled")
    assert log.enabled_for(logging.DEBUG) is (level == logging.DEBUG)
    assert log.enabled_for(logging.INFO)
    log.debug("maybe")
    log.info("always")
    assert [line["event"] for line in lines(json_logs)] == (["maybe"] if level == logging.DEBUG else []) + ["always"]


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ours_first", [True, False])
def test_structlog_is_loaded_and_configured_when_the_first_line_is_logged(ours_first: bool) -> None:
    """A command that logs nothing never imports structlog (nor rich); the first line logged, ours or a
    library's, comes out in the configured format (docs/performance.md "Read commands, third pass")."""
    ours = 'get_logger("worker.test").warning("ours", dropped=None)'
    theirs = 'logging.getLogger("some.library").warning("theirs %s", "formatted")'
    code = "\n".join(
        [
            "import logging, sys",
            "from worker.infra.logging import configure_logging, get_logger",
            'configure_logging("json", logging.WARNING)',
            'logging.getLogger("some.library").info("below the level: never formatted")',
            'get_logger("worker.test")',
            'assert "structlog" not in sys.modules and "rich" not in sys.modules, "loaded before any line"',
            *([ours, theirs] if ours_first else [theirs, ours]),
        ]
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    logged = {str(line["event"]): line for line in map(json.loads, done.stderr.splitlines())}
    assert list(logged) == (["ours", "theirs formatted"] if ours_first else ["theirs formatted", "ours"])
    assert logged["theirs formatted"]["logger"] == "some.library"
    assert "dropped" not in logged["ours"]
    for line in logged.values():
        assert line["level"] == "warning" and TIMESTAMP.fullmatch(str(line["timestamp"]))


def test_the_project_logs_through_get_logger() -> None:
    """A module that logged through `structlog.get_logger` directly could log before structlog is configured
    (`configure_logging` defers that to the first line logged through `get_logger` or the stderr handler)."""
    direct = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "worker").rglob("*.py"))
        if path.name != "logging.py" and "structlog.get_logger" in path.read_text()
    ]
    assert direct == []
