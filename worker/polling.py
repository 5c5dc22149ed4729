"""When to poll a run next.

A poll costs CPU and API quota; polling late delays the reply. Runs of one deployment take
similar times, so the planner learns from the runs this process saw end: it keeps the
durations of recent run phases (start, or tool submission, to the next state that needs
the worker) and estimates the window in which most of them end (5th to 95th percentile).
It polls once early (fast failures), then not again until the window opens, then evenly
through the window, then backs off. With too little history, or for runs beyond the
window, it backs off exponentially from POLL_INITIAL_DELAY_SECONDS to
POLL_MAX_DELAY_SECONDS. The API's `openai-poll-after-ms` hint, when sent, always wins.
"""

from __future__ import annotations

import random
import threading
from collections import deque

from worker.settings import Settings

HISTORY = 200  # phase durations remembered
MIN_HISTORY = 20  # below this, plain backoff
POLLS_PER_WINDOW = 6  # polls spread over the window where most runs end
RELATIVE_SPACING = 0.08  # polls in the window at least this share of its start apart
WINDOW_REFRESH = 10  # recompute the window after this many new observations


class PollPlanner:
    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.initial = settings.poll_initial_delay_seconds
        self.maximum = settings.poll_max_delay_seconds
        self.minimum = settings.poll_min_delay_seconds
        self.factor = settings.poll_backoff_factor
        self.jitter = settings.poll_jitter
        self._rng = rng or random.Random()
        self._durations: deque[float] = deque(maxlen=HISTORY)
        self._lock = threading.Lock()
        self._window: tuple[float, float] | None = None
        self._since_refresh = 0

    def observe(self, duration: float) -> None:
        """A run phase was seen ended (or needing the worker) `duration` seconds after it
        started."""
        if duration <= 0:
            return
        with self._lock:
            self._durations.append(duration)
            self._since_refresh += 1
            if self._since_refresh >= WINDOW_REFRESH or self._window is None:
                self._refresh()

    def window(self) -> tuple[float, float] | None:
        return self._window

    def next_delay(self, elapsed: float, polls: int, hint_ms: int | None = None) -> float:
        """Seconds until the next poll of a phase `elapsed` seconds old, polled `polls` times."""
        if hint_ms is not None:
            return min(max(hint_ms / 1000.0, self.minimum), self.maximum * 4)
        window = self._window
        if window is not None:
            low, high = window
            # Evenly through the window, but never closer than a small share of the typical
            # duration: a window learnt from the first (shortest) runs of a burst is narrow.
            spacing = (high - low) / POLLS_PER_WINDOW
            spacing = min(max(spacing, low * RELATIVE_SPACING, self.minimum), self.maximum)
            if polls == 0 and elapsed + self.initial < low:
                return self._jittered(self.initial)  # one early look: fast failures
            if elapsed + spacing < low:
                return low - elapsed  # nothing to see before the window opens
            if elapsed <= high:
                return self._jittered(spacing)
            beyond = int((elapsed - high) / spacing) + 1  # an unusually long run: back off
            return self._jittered(min(self.maximum, spacing * self.factor ** beyond))
        return self._jittered(min(self.maximum, self.initial * self.factor ** polls))

    def _refresh(self) -> None:
        self._since_refresh = 0
        if len(self._durations) < MIN_HISTORY:
            self._window = None
            return
        ordered = sorted(self._durations)
        last = len(ordered) - 1
        self._window = (ordered[int(last * 0.05)], ordered[int(last * 0.95)])

    def _jittered(self, delay: float) -> float:
        return max(self.minimum, delay * self._rng.uniform(1 - self.jitter, 1 + self.jitter))
