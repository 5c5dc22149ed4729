"""The poll planner: backoff without history, a learned window with it, hints first."""

from __future__ import annotations

import random

from worker.polling import HISTORY, MIN_ENDED, SHARE_EVERY, PollPlanner
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


def window(planner: PollPlanner) -> tuple[float, float | None]:
    """The planner's window, which the test expects it to have learnt by now."""
    learnt = planner.window()
    assert learnt is not None
    return learnt


def test_without_history_it_backs_off_to_the_maximum() -> None:
    planner = PollPlanner(SETTINGS)
    delays = [planner.next_delay(0, n) for n in range(8)]
    assert delays[0] == 0.5 and delays[1] == 0.75
    assert max(delays) == 2.0 and delays == sorted(delays)


def test_with_history_it_polls_through_the_window_where_runs_end() -> None:
    """10 s runs ±30 %: few polls, and the end is seen within a second."""
    rng = random.Random(4)
    planner = PollPlanner(SETTINGS, rng)
    for n in range(200):
        planner.ended(f"run-{n}", 10 * rng.uniform(0.7, 1.3))
    low, high = window(planner)
    assert 6.9 < low < 7.8 and high is not None and 12.2 < high < 13.1
    durations = [7.0 + n / 10 for n in range(56)]  # 7.0 to 12.5 s
    schedules = [schedule(planner, duration) for duration in durations]
    assert sum(len(times) for times in schedules) / len(schedules) <= 8
    assert max(times[-1] - duration for times, duration in zip(schedules, durations, strict=True)) <= 1.0
    assert schedule(planner, 0.3)[0] == 0.5  # one early look catches fast failures


def test_the_hint_wins() -> None:
    planner = PollPlanner(SETTINGS)
    for n in range(MIN_ENDED):
        planner.ended(f"run-{n}", 10)
    assert planner.next_delay(3.0, 1, hint_ms=250) == 0.25
    assert planner.next_delay(3.0, 1, hint_ms=1) == 0.1


def test_runs_still_running_count() -> None:
    """The first runs to end are the quick ones: with 100 runs still running at 8 s, three
    that ended at about 7 s open the window there but say nothing yet of where it closes."""
    planner = PollPlanner(SETTINGS)
    for n in range(100):
        planner.running(f"long-{n}", 8.0)
    for n, duration in enumerate((7.0, 7.1, 7.2)):
        planner.ended(f"quick-{n}", duration)
    assert planner.window() is None  # 3 of 103: not yet 5 %
    for n in range(3, 8):
        planner.ended(f"quick-{n}", 7.2 + n / 10)
    low, high = window(planner)
    assert 7.0 <= low < 8.0 and high is None
    # Without the runs still running, the same ends would make a window closing at 8 s.
    naive = PollPlanner(SETTINGS)
    for n, duration in enumerate((7.0, 7.1, 7.2, *(7.2 + n / 10 for n in range(3, 8)))):
        naive.ended(f"quick-{n}", duration)
    assert window(naive)[1] is not None
    # With the end unknown, a long run is polled through at the window's spacing.
    delays = [planner.next_delay(elapsed, 5) for elapsed in (9.0, 12.0, 20.0)]
    assert delays == [delays[0]] * 3 and delays[0] < 1.0


def test_the_window_start_follows_runs_that_end_earlier() -> None:
    """Ends are seen at a poll, an upper bound: a window learnt late (from 9 s) must still
    move down to where runs of 7-8 s end, because it opens one spacing early."""
    rng = random.Random(7)
    planner = PollPlanner(SETTINGS, rng)
    for n in range(20):
        planner.ended(f"late-{n}", 9.0 + n / 20)
    assert window(planner)[0] >= 9.0
    for n in range(400):
        duration = rng.uniform(7.0, 8.0)
        times = schedule(planner, duration)
        planner.ended(f"run-{n}", times[-1])
    low, _ = window(planner)
    assert low < 7.8
    lags = sorted(schedule(planner, d)[-1] - d for d in (7.0, 7.2, 7.5, 7.9))
    assert lags[-1] <= 1.0, lags


def test_a_seeded_planner_starts_with_the_window_of_the_durations_it_was_given() -> None:
    """A process that starts is seeded with the fleet's recent durations (newest first):
    it plans from the first run, and the newest durations are the ones it keeps."""
    rng = random.Random(5)
    shared = [10 * rng.uniform(0.7, 1.3) for _ in range(HISTORY)] + [1.0] * 50  # older ones last
    planner = PollPlanner(SETTINGS, rng)
    planner.seed(shared)
    low, high = window(planner)
    assert 6.9 < low < 7.8 and high is not None and 12.2 < high < 13.1
    learned = PollPlanner(SETTINGS)  # the same durations, seen ending here
    for n, duration in enumerate(reversed(shared[:HISTORY])):
        learned.ended(f"run-{n}", duration)
    learned_low, learned_high = window(learned)
    assert learned_high is not None and abs(learned_low - low) < 0.1 and abs(learned_high - high) < 0.1
    assert schedule(planner, 10.0)[1] > 6.0, "after the early look, nothing before the window"


def test_ended_durations_are_handed_on_in_groups() -> None:
    planner = PollPlanner(SETTINGS)
    for n in range(SHARE_EVERY - 1):
        planner.ended(f"run-{n}", 2.0 + n)
    assert planner.take_unshared() == []
    planner.ended("run-last", 1.5)
    taken = planner.take_unshared()
    assert taken == [2.0 + n for n in range(SHARE_EVERY - 1)] + [1.5]
    assert planner.take_unshared() == []


def test_the_99th_percentile_of_ended_phases_is_known_once_a_few_ended() -> None:
    planner = PollPlanner(SETTINGS)
    assert planner.quantile(0.99) is None
    for n in range(100):
        planner.ended(f"p{n}", 1.0 + n / 10)  # 1.0 .. 10.9 s
    assert planner.quantile(0.99) == 10.9
    assert planner.quantile(0.5) == 6.0
