"""The fingerprint of the code this process runs (docs/sync.md §8.6): a recorded decision is reused only by the
code that made it, so a deployment that changes any rule decides every subscription in full once."""

from __future__ import annotations

import functools
import hashlib
import secrets
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # worker/


@functools.cache
def code_fingerprint() -> str:
    """SHA-256 of every Python source of the `worker` package (path and bytes), computed once per process (~5 ms).
    Without sources to read, a value of this process alone: decisions are then never reused across processes."""
    digest = hashlib.sha256()
    sources = sorted(_PACKAGE.rglob("*.py"))
    if not sources:
        return "unread-" + secrets.token_hex(16)
    for path in sources:
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
