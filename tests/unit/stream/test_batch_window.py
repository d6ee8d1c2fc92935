"""When the usage consumer cuts a batch: the pure part of its collect loop."""

from __future__ import annotations

import pytest

from worker.stream.usage_consumer import collect_wait


def test_a_held_batch_waits_for_more_until_its_cut_time_in_short_slices() -> None:
    waits = []
    now = 10.0
    while (wait := collect_wait(now, True, cut_at=10.12, idle_at=10.5)) is not None:
        waits.append(round(wait, 6))
        now += wait
    assert waits == [0.05, 0.05, 0.02]


def test_a_held_batch_past_its_cut_time_is_cut_at_once() -> None:
    # The previous batch took longer than max_wait: what is held goes now.
    assert collect_wait(11.0, True, cut_at=10.5, idle_at=11.5) is None


def test_an_empty_batch_waits_for_its_first_message_until_the_idle_check() -> None:
    # Past the cut time but holding nothing: keep polling, in slices, until idle_at.
    assert collect_wait(11.0, False, cut_at=10.5, idle_at=11.5) == 0.05
    assert collect_wait(11.48, False, cut_at=10.5, idle_at=11.5) == pytest.approx(0.02)
    assert collect_wait(11.5, False, cut_at=10.5, idle_at=11.5) is None
