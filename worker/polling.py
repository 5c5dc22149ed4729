"""When to poll a run next.

A poll costs CPU and API quota; polling late delays the reply. Runs of one deployment take
similar times, so the planner learns from the runs this process follows: the durations of
recent run phases that ended (start, or tool submission, to the next state that needs the
worker) and the ages of the phases still running. From both it estimates (Kaplan-Meier, so
that the many runs still running count, not only the quick ones that already ended) the
window in which most phases end, the 5th to 95th percentile. It polls once early (fast
failures), then not again until the window opens, then evenly through the window, then
backs off. While the window's end is not known yet, it keeps the spacing it would use in a
window. With too little history it backs off exponentially from POLL_INITIAL_DELAY_SECONDS
to POLL_MAX_DELAY_SECONDS. The API's `openai-poll-after-ms` hint, when sent, always wins.

The processes of a fleet share the durations they see (through Redis, by the service), so
that one that starts (a deploy, a scale-out) is seeded with them instead of starting blind.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable

from worker.settings import Settings

HISTORY = 200  # ended phases remembered
RUNNING_TRACKED = 4096  # running phases remembered (the oldest forgotten first)
MIN_ENDED = 3  # below this, plain backoff
LOW_QUANTILE, HIGH_QUANTILE = 0.05, 0.95
POLLS_PER_WINDOW = 6  # polls spread over the window where most runs end
RELATIVE_SPACING = 0.08  # polls in the window at least this share of its start apart
WINDOW_REFRESH = 10  # recompute the window after this many newly ended phases
SHARE_EVERY = 10  # ended phases handed to the shared history at a time


class PollPlanner:
    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.initial = settings.poll_initial_delay_seconds
        self.maximum = settings.poll_max_delay_seconds
        self.minimum = settings.poll_min_delay_seconds
        self.factor = settings.poll_backoff_factor
        self.jitter = settings.poll_jitter
        self._rng = rng or random.Random()
        self._ended: deque[float] = deque(maxlen=HISTORY)
        self._running: OrderedDict[str, float] = OrderedDict()  # phase -> age when last seen running
        self._lock = threading.Lock()
        self._window: tuple[float, float | None] | None = None
        self._since_refresh = 0
        self._unshared: list[float] = []

    def seed(self, durations: Iterable[float]) -> None:
        """Start from durations other processes saw (the newest first)."""
        with self._lock:
            for duration in reversed(list(durations)[:HISTORY]):
                if duration > 0:
                    self._ended.append(duration)
            self._refresh()

    def take_unshared(self) -> list[float]:
        """The durations ended here since the last call, once SHARE_EVERY have gathered."""
        with self._lock:
            if len(self._unshared) < SHARE_EVERY:
                return []
            taken, self._unshared = self._unshared, []
            return taken

    def running(self, phase: str, elapsed: float) -> None:
        """A poll saw `phase` still running `elapsed` seconds after it started."""
        with self._lock:
            self._running[phase] = elapsed
            self._running.move_to_end(phase)
            if len(self._running) > RUNNING_TRACKED:
                self._running.popitem(last=False)

    def ended(self, phase: str, duration: float) -> None:
        """`phase` was seen ended (or needing the worker) `duration` seconds after it started.

        The time it was seen is an upper bound of its end; the window opens one spacing early
        (see next_delay) so that runs which end before it are seen earlier, and the window's
        start follows them down instead of staying where it was first learnt."""
        with self._lock:
            self._running.pop(phase, None)
            if duration <= 0:
                return
            self._ended.append(duration)
            self._unshared.append(duration)
            self._since_refresh += 1
            if self._since_refresh >= WINDOW_REFRESH or self._window is None:
                self._refresh()

    def forget(self, phase: str) -> None:
        """`phase` stopped being followed without being seen to end (cancelled, handed over)."""
        with self._lock:
            self._running.pop(phase, None)

    def window(self) -> tuple[float, float | None] | None:
        return self._window

    def quantile(self, q: float) -> float | None:
        """The `q` quantile of the recent phases that ended (None: fewer than MIN_ENDED)."""
        with self._lock:
            ended = sorted(self._ended)
        if len(ended) < MIN_ENDED:
            return None
        return ended[min(len(ended) - 1, int(q * len(ended)))]

    def next_delay(self, elapsed: float, polls: int, hint_ms: int | None = None) -> float:
        """Seconds until the next poll of a phase `elapsed` seconds old, polled `polls` times."""
        if hint_ms is not None:
            return min(max(hint_ms / 1000.0, self.minimum), self.maximum * 4)
        window = self._window
        if window is None:
            return self._jittered(min(self.maximum, self.initial * self.factor ** polls))
        low, high = window
        # Evenly through the window, but never closer than a small share of the typical
        # duration: a window learnt from few runs can be narrow.
        spacing = (high - low) / POLLS_PER_WINDOW if high is not None else 0.0
        spacing = min(max(spacing, low * RELATIVE_SPACING, self.minimum), self.maximum)
        opens = low - spacing
        if polls == 0 and elapsed + self.initial < opens:
            return self._jittered(self.initial)  # one early look: fast failures
        if elapsed + spacing < opens:
            return opens - elapsed  # nothing to see before the window opens
        if high is None or elapsed <= high:
            return self._jittered(spacing)
        beyond = int((elapsed - high) / spacing) + 1  # an unusually long run: back off
        return self._jittered(min(self.maximum, spacing * self.factor ** beyond))

    def _refresh(self) -> None:
        """Kaplan-Meier over ended phases (events) and running ones (censored at their age)."""
        self._since_refresh = 0
        if len(self._ended) < MIN_ENDED:
            self._window = None
            return
        observations = sorted([(d, True) for d in self._ended]
                              + [(age, False) for age in self._running.values()])
        at_risk, surviving = len(observations), 1.0
        low = high = None
        for age, is_end in observations:
            if is_end:
                surviving *= 1 - 1 / at_risk
                if low is None and surviving <= 1 - LOW_QUANTILE:
                    low = age
                if surviving <= 1 - HIGH_QUANTILE:
                    high = age
                    break
            at_risk -= 1
        self._window = None if low is None else (low, high)

    def _jittered(self, delay: float) -> float:
        return max(self.minimum, delay * self._rng.uniform(1 - self.jitter, 1 + self.jitter))
