"""The fleet's recent run phase durations, shared so that a new process polls from them."""

from __future__ import annotations

import redis

from worker import keys


class PhaseHistory:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def share(self, durations: list[float], keep: int) -> None:
        """Add durations to the fleet's history (the newest `keep` stay)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(keys.PHASE_DURATIONS, *(f"{d:.3f}" for d in durations))
        pipe.ltrim(keys.PHASE_DURATIONS, 0, keep - 1)
        pipe.execute()

    def recent(self, keep: int) -> list[float]:
        """The fleet's recent durations, newest first."""
        durations = []
        for raw in self.redis.lrange(keys.PHASE_DURATIONS, 0, keep - 1):
            try:
                durations.append(float(raw))
            except ValueError:
                continue  # not ours: skipped
        return durations
