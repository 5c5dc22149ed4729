"""The Redis client every part of the project makes from the settings (producers too)."""

from __future__ import annotations

from typing import Any

import redis

from worker.settings import Settings


def make_redis(settings: Settings) -> redis.Redis:
    # A socket timeout, so that a Redis that stops answering fails a step (and shows in
    # /healthz) instead of hanging it; longer than the scheduler's blocking wait.
    return redis.Redis.from_url(settings.redis_url, health_check_interval=30,
                                socket_timeout=max(10.0, settings.scheduler_interval_seconds + 5),
                                socket_connect_timeout=5)


# redis-py's replies are typed `bytes | str` (whether it decodes depends on the client):
# these read them as this project's clients return them (bytes, not decoded).
StreamEntries = list[tuple[str, dict[bytes, bytes]]]


def text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def stream_entries(rows: Any) -> StreamEntries:
    """XRANGE / XREVRANGE rows (or one stream of an XREAD reply) as (id, fields)."""
    return [(text(entry_id), dict(fields or {})) for entry_id, fields in rows or []]
