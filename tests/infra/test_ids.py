"""Generated ids (worker.infra.ids): a ULID is the 128-bit value in 26 Crockford digits, time first."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from worker.infra.ids import crockford_128, new_id, ulid

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def decoded(digits: str) -> int:
    value = 0
    for d in digits:
        value = value * 32 + CROCKFORD.index(d)
    return value


@given(st.integers(0, 2**128 - 1))
def test_the_digits_are_the_value(value: int) -> None:
    digits = crockford_128(value)
    assert len(digits) == 26 and decoded(digits) == value


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1))
def test_the_digits_sort_as_the_values(a: int, b: int) -> None:
    assert (crockford_128(a) < crockford_128(b)) == (a < b)


def test_a_ulid_starts_with_the_milliseconds_and_ids_do_not_repeat() -> None:
    before = time.time_ns() // 1_000_000
    made = [ulid() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    assert all(before <= decoded(u) >> 80 <= after for u in made)
    assert len(set(made)) == len(made)
    assert new_id("chg").startswith("chg_") and len(new_id("chg")) == 30
