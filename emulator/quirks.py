"""Switches that play a particular server's habits, not random faults: a 500 on runs that carry
more than one message, and an outage window during which /v1 connections are reset unanswered."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from .config import EmulatorConfig
from .errors import ApiError

MULTI_MESSAGE_500 = "multi_message_500"
OUTAGE = "outage"
OUTAGE_FIELDS = frozenset({"outage_after_seconds", "outage_seconds"})
# The operations whose request carries a run's batch of messages, and where it sits in the body.
_BATCH_OF = {"createRun": ("additional_messages",), "createThreadAndRun": ("thread", "messages")}


class Quirks:
    """Counts what it did (`counts()`, in the stats under `faults_injected.quirks`)."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._clock = clock
        self._anchor = clock()  # the outage window is counted from here
        self.given: Counter[str] = Counter()

    def reconfigure(self, config: EmulatorConfig, changed: Mapping[str, Any]) -> None:
        """A change that sets either outage field starts its window again from now."""
        with self._lock:
            self._config = config
            if OUTAGE_FIELDS & set(changed):
                self._anchor = self._clock()

    def reset(self) -> None:
        with self._lock:
            self.given.clear()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {MULTI_MESSAGE_500: self.given[MULTI_MESSAGE_500], OUTAGE: self.given[OUTAGE]}

    def window(self) -> tuple[float, float] | None:
        """The outage's (start, end) in the clock's time, or None when there is none."""
        with self._lock:
            config, anchor = self._config, self._anchor
        if config.outage_seconds <= 0:
            return None
        start = anchor + config.outage_after_seconds
        return start, start + config.outage_seconds

    def unreachable(self) -> bool:
        """Whether a /v1 request arriving now falls in the outage (and count it if so)."""
        if self._config.outage_seconds <= 0:  # the common case, without the lock
            return False
        window = self.window()
        if window is None or not window[0] <= self._clock() < window[1]:
            return False
        with self._lock:
            self.given[OUTAGE] += 1
        return True

    def refuse(self, operation: str, body: Mapping[str, Any]) -> ApiError | None:
        """The 500 some compatible servers give a run created with more than one message."""
        path = _BATCH_OF.get(operation)
        if path is None or not self._config.multi_message_500 or _count(body, path) <= 1:
            return None
        with self._lock:
            self.given[MULTI_MESSAGE_500] += 1
        return ApiError(500, "The server had an error while processing your request. Sorry about that!",
                        type="server_error", code="server_error")


def _count(body: Mapping[str, Any], path: tuple[str, ...]) -> int:
    """How many messages the body holds at `path` (0 when absent or not a list)."""
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return len(value) if isinstance(value, list) else 0
