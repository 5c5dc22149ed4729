"""The Redis client every part of the project makes from the settings (producers too)."""

from __future__ import annotations

import redis

from worker.settings import Settings


def make_redis(settings: Settings) -> redis.Redis:
    # A socket timeout, so that a Redis that stops answering fails a step (and shows in
    # /healthz) instead of hanging it; longer than the scheduler's blocking wait.
    return redis.Redis.from_url(settings.redis_url, health_check_interval=30,
                                socket_timeout=max(10.0, settings.scheduler_interval_seconds + 5),
                                socket_connect_timeout=5)
