"""Learning that a server cannot take a request shape: runs created with several messages.

Some Assistants-compatible servers answer 5xx to every run create whose
`additional_messages` holds more than one message (one works). A 5xx may be a passing
fault, so one is not enough: two such creates failing in a row while other calls to the
server succeed (it is up) teach the fleet "no multi-message runs" (capabilities.py), and
the batches' messages are appended one at a time from then on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from worker.backends.api import ApiCalls
from worker.capabilities import Capability, CapabilityStore
from worker.errors import TransientApiError

FAILURES_TO_LEARN = 2


class ShapeFailures:
    def __init__(self, api: ApiCalls, known: CapabilityStore) -> None:
        self.api = api
        self.known = known
        self._failures = 0
        self._ok_calls_at_first = 0
        self._lock = threading.Lock()

    @contextmanager
    def watch(self, messages: int) -> Iterator[None]:
        """Around one create carrying `messages` user messages."""
        if messages <= 1:
            yield
            return
        try:
            yield
        except TransientApiError as exc:
            if exc.status is not None and exc.status >= 500:
                self._failed(messages, exc)
            raise
        with self._lock:
            self._failures = 0

    def _failed(self, messages: int, exc: TransientApiError) -> None:
        with self._lock:
            self._failures += 1
            if self._failures == 1:
                self._ok_calls_at_first = self.api.ok_calls
                return
            others_succeed = self.api.ok_calls > self._ok_calls_at_first
            if self._failures < FAILURES_TO_LEARN or not others_succeed:
                return
            self._failures = 0
        self.known.learn(Capability.MULTI_MESSAGE_RUNS, False,
                         f"{FAILURES_TO_LEARN} creates with {messages} messages answered HTTP {exc.status} "
                         "while other calls succeeded")
