"""The line identity of docs/sync.md §1.6, built by `worker.domain.identity` alone."""

from __future__ import annotations

from worker.domain.identity import line_identity, version_identity


def test_a_recurring_item_has_a_period_part_and_a_one_time_item_none() -> None:
    assert line_identity("sub_01", "default", "platform-fee", 1, 0) == "sub_01/default/platform-fee/v[1]/period[0]"
    assert line_identity("sub_01", "trial", "setup", 0) == "sub_01/trial/setup/v[0]"


def test_the_identity_within_a_phase_is_the_tail_of_the_line_identity() -> None:
    for period in (None, 0, 12):
        tail = version_identity("seats", 3, period)
        assert line_identity("sub_9", "paid", "seats", 3, period) == f"sub_9/paid/{tail}"
