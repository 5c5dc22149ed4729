"""The poll planner: backoff without history, a learned window with it, hints first."""

from __future__ import annotations

import random

from worker.polling import MIN_HISTORY, PollPlanner
from worker.settings import Settings

SETTINGS = Settings(poll_initial_delay_seconds=0.5, poll_max_delay_seconds=2.0,
                    poll_min_delay_seconds=0.1, poll_jitter=0.0)


def schedule(planner: PollPlanner, duration: float) -> list[float]:
    """Poll times of a phase that ends after `duration` seconds."""
    times, elapsed, polls = [], 0.0, 0
    while True:
        elapsed += planner.next_delay(elapsed, polls)
        times.append(elapsed)
        polls += 1
        if elapsed >= duration:
            return times


def test_without_history_it_backs_off_to_the_maximum() -> None:
    planner = PollPlanner(SETTINGS)
    delays = [planner.next_delay(0, n) for n in range(8)]
    assert delays[0] == 0.5 and delays[1] == 0.75
    assert max(delays) == 2.0 and delays == sorted(delays)


def test_with_history_it_polls_through_the_window_where_runs_end() -> None:
    """10 s runs ±30 %: few polls, and the end is seen within a second."""
    rng = random.Random(4)
    planner = PollPlanner(SETTINGS, rng)
    for _ in range(200):
        planner.observe(10 * rng.uniform(0.7, 1.3))
    low, high = planner.window()  # type: ignore[misc]
    assert 6.9 < low < 7.8 and 12.2 < high < 13.1
    for duration in (7.5, 10.0, 12.5):
        times = schedule(planner, duration)
        assert len(times) <= 8, times
        assert times[-1] - duration <= 1.0, times
    assert schedule(planner, 0.3)[0] == 0.5  # one early look catches fast failures


def test_the_hint_wins() -> None:
    planner = PollPlanner(SETTINGS)
    for _ in range(MIN_HISTORY):
        planner.observe(10)
    assert planner.next_delay(3.0, 1, hint_ms=250) == 0.25
    assert planner.next_delay(3.0, 1, hint_ms=1) == 0.1
