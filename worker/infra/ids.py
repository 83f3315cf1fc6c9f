"""Generated identifiers: `prefix_` + a ULID (time-ordered, 26 Crockford base32 characters)."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """A new ULID: 48 bits of Unix milliseconds then 80 random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """`new_id("sub")` → `"sub_01J9Z6…"`; always a valid contract id (≤ 128 characters)."""
    return f"{prefix}_{ulid()}"
