"""The fault switch: 429s, 500s and lost responses on /v1 operations, drawn from a seeded RNG."""

from __future__ import annotations

import random
import threading
from collections import Counter

from .config import EmulatorConfig
from .errors import ApiError

RATE_LIMITED = "429"
SERVER_ERROR = "500"
LOST = "lost"


class FaultInjector:
    def __init__(self, config: EmulatorConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(config.seed)
        self.injected: Counter[str] = Counter()
        self.by_operation: dict[str, Counter[str]] = {}

    def reconfigure(self, config: EmulatorConfig) -> None:
        with self._lock:
            if config.seed != self._config.seed:
                self._rng.seed(config.seed)
            self._config = config

    def reset(self) -> None:
        with self._lock:
            self.injected.clear()
            self.by_operation.clear()

    def draw(self, operation: str) -> str | None:
        """The fault to inject into this call of `operation`, if any (and count it)."""
        config = self._config
        total = config.fault_429 + config.fault_500 + config.fault_lost
        if not total or (config.fault_operations is not None and operation not in config.fault_operations):
            return None
        with self._lock:
            draw = self._rng.random()
            if draw < config.fault_429:
                fault = RATE_LIMITED
            elif draw < config.fault_429 + config.fault_500:
                fault = SERVER_ERROR
            elif draw < total:
                fault = LOST
            else:
                return None
            self.injected[fault] += 1
            self.by_operation.setdefault(operation, Counter())[fault] += 1
        return fault

    def counts(self) -> dict[str, object]:
        with self._lock:
            return {**dict(self.injected), "by_operation": {op: dict(c) for op, c in self.by_operation.items()}}

    def error(self, fault: str) -> ApiError:
        """The answer that stands in for the real one."""
        if fault == RATE_LIMITED:
            delay_ms = self._config.fault_retry_after_ms
            headers = {"retry-after-ms": str(delay_ms), "retry-after": str(delay_ms // 1000)}
            return ApiError(429, "Rate limit reached for requests (emulated fault).", type="requests",
                            code="rate_limit_exceeded", headers=headers)
        return ApiError(500, "The server had an error while processing your request. Sorry about that! "
                             "(emulated fault)", type="server_error", code="server_error")
