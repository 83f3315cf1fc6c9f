"""What an operator sees on an 80-column terminal (issue 24): `lines`, `charges list`, `dead-letters list`
and `status` run in a real pseudo-terminal (so they print tables, as on a terminal) at 80 columns. No line
is longer than the terminal (so the terminal never wraps one, and no id is broken across lines), and the
rows' identities are all there, each shown by a distinct cell."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.builders import fast_settings
from worker import bootstrap
from worker.cli import app
from worker.cli.demo import DEMO_CREDIT_SUBSCRIPTION, DEMO_CUSTOMER, DEMO_NAMESPACE, DEMO_SUBSCRIPTION
from worker.cli.output import ELLIPSIS
from worker.contract.events import QUEUE_NAME, SUBSCRIPTION_EVENT_ACTOR

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 80
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def on_terminal(env: dict[str, str], *args: str) -> str:
    """`subsync ARGS` in a new process whose stdout and stderr are a pseudo-terminal of WIDTH columns."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 200, WIDTH, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**os.environ, **env, "COLUMNS": str(WIDTH), "LINES": "200", "TERM": "dumb", "NO_COLOR": "1"},
        cwd=ROOT,
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            assert ready, f"subsync {' '.join(args)} printed nothing for 120 s"
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        assert process.wait(timeout=120) == 0, b"".join(chunks).decode(errors="replace")
    return _ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def _pieces_in_order(token: str, value: str) -> bool:
    pieces = token.split(ELLIPSIS)
    if not value.startswith(pieces[0]) or not value.endswith(pieces[-1]):
        return False
    at = len(pieces[0])
    for piece in pieces[1:-1]:
        found = value.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return at <= len(value) - len(pieces[-1])


def assert_fits_with_distinct_identities(text: str, identities: list[str]) -> None:
    """Every line fits WIDTH; every identity is shown on one line by a cell (whole, after a prefix said once,
    or shortened with its pieces in order), and distinct identities by distinct cells (a matching)."""
    lines = text.splitlines()
    assert all(len(line) <= WIDTH for line in lines), "\n".join(line for line in lines if len(line) > WIDTH)
    prefixes = ["", *re.findall(r"(?:under|starts with)\s+(\S+)", text)]
    tokens = sorted({token.strip("└()") for line in lines for token in line.split()})
    candidates: dict[str, list[str]] = {}
    for value in identities:
        shown = {value.removeprefix(p) for p in prefixes if value.startswith(p)}
        shown |= {s.removeprefix(p) for s in shown for p in prefixes if s.startswith(p)}
        candidates[value] = [
            t for t in tokens if t in shown or (ELLIPSIS in t and any(_pieces_in_order(t, s) for s in shown))
        ]
        assert candidates[value], (value, text)
    owner: dict[str, str] = {}

    def assign(value: str, seen: set[str]) -> bool:  # augmenting path: each identity gets its own cell
        for token in candidates[value]:
            if token not in seen:
                seen.add(token)
                if token not in owner or assign(owner[token], seen):
                    owner[token] = value
                    return True
        return False

    for value in identities:
        assert assign(value, set()), f"{value} has no cell of its own in\n{text}"


@pytest.fixture
def demo_env(db: Engine, cli_env: dict[str, str], broker_namespace: str) -> dict[str, str]:
    env = {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace}
    result = CliRunner().invoke(app, ["demo", "--format", "json"], env=env)
    assert result.exit_code == 0, result.stderr
    return env


def cli_json(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--format", "json"], env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_lines_and_charges_at_80_columns(demo_env: dict[str, str]) -> None:
    lines = cli_json(demo_env, "lines", "--namespace", DEMO_NAMESPACE, "--subscription", DEMO_SUBSCRIPTION)
    shown = on_terminal(demo_env, "lines", "--namespace", DEMO_NAMESPACE, "--subscription", DEMO_SUBSCRIPTION)
    assert len(lines) > 3
    assert_fits_with_distinct_identities(shown, [line["unique_reference_id"] for line in lines])

    args = ("charges", "list", "--namespace", DEMO_NAMESPACE, "--customer", DEMO_CUSTOMER)
    charges = cli_json(demo_env, *args)
    shown = on_terminal(demo_env, *args)
    runs = [run for c in charges for run in c["runs"] if not run["deleted"]]
    allocations = [a["id"] for run in runs for a in run["allocations"]]
    assert charges and runs and allocations and "credited" in shown and "to pay" in shown
    assert charges[0]["subscription"]["subscription_id"] == DEMO_CREDIT_SUBSCRIPTION
    assert_fits_with_distinct_identities(shown, [c["unique_reference_id"] for c in charges])
    assert_fits_with_distinct_identities(shown, [c["id"] for c in charges])
    assert_fits_with_distinct_identities(shown, [run["id"] for run in runs])
    assert_fits_with_distinct_identities(shown, allocations)


@pytest.fixture
def dead_letters(db: Engine, redis_broker: RedisBroker, broker_namespace: str) -> Iterator[None]:
    """Three invalid events, dead-lettered at once by a worker."""
    bootstrap.worker(fast_settings(broker_namespace), redis_broker, engine=lambda: db)
    worker = dramatiq.Worker(redis_broker, queues={QUEUE_NAME}, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        for n in range(3):
            payload = {"type": "subscription.created", "namespace": "acme", "subscription_id": f"sub_{n}"}
            message = dramatiq.Message(
                queue_name=QUEUE_NAME, actor_name=SUBSCRIPTION_EVENT_ACTOR, args=(payload,), kwargs={}, options={}
            )
            redis_broker.enqueue(message)
        redis_broker.join(QUEUE_NAME, interval=20, timeout=20_000)
        yield
    finally:
        worker.stop()


def test_dead_letters_and_status_at_80_columns(
    dead_letters: None, cli_env: dict[str, str], broker_namespace: str
) -> None:
    env = {**cli_env, "SUBSYNC_BROKER_NAMESPACE": broker_namespace}
    letters = cli_json(env, "dead-letters", "list")
    assert len(letters) == 3
    shown = on_terminal(env, "dead-letters", "list")
    assert_fits_with_distinct_identities(shown, [letter["id"] for letter in letters])
    status = on_terminal(env, "status")
    assert all(len(line) <= WIDTH for line in status.splitlines()), status
    assert str(cli_json(env, "status")["dead_letters"]) in status
