"""Deadlines: every wait in the benchmark polls a condition and gives up at a deadline."""

from __future__ import annotations

import time


class BenchTimeout(RuntimeError):
    """A condition was not met before its deadline."""


class Deadline:
    def __init__(self, seconds: float, what: str) -> None:
        self.at = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self) -> None:
        if self.expired():
            raise BenchTimeout(f"timed out after {self.seconds:g} s waiting for {self.what}")

    def sleep(self, interval: float) -> None:
        """Raise when expired, else sleep `interval` (never past the deadline)."""
        self.check()
        time.sleep(max(0.0, min(interval, self.remaining())))

    def sub(self, seconds: float, what: str) -> Deadline:
        """A deadline for one step: `seconds` from now, but never later than this one."""
        step = Deadline(min(seconds, max(0.0, self.remaining())), what)
        if step.at >= self.at:
            step.what = f"{what} (within the scenario's {self.seconds:g} s)"
        return step
