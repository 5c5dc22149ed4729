"""The watches for late copies of answered batches (worker/conversation/late_copies.py):
one small JSON record per conversation, and the conversation's place on the schedule."""

from __future__ import annotations

import json
from typing import Any

import redis

from worker import keys

Watch = dict[str, Any]


class LateCopies:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def load(self, conversation_id: str) -> list[Watch]:
        raw = self.redis.get(keys.late_copies(conversation_id))
        if raw is None:
            return []
        try:
            watches = json.loads(raw)
        except ValueError:
            return []  # not ours: nothing to watch
        return [w for w in watches if isinstance(w, dict)] if isinstance(watches, list) else []

    def save(self, conversation_id: str, watches: list[Watch], ttl_seconds: float) -> None:
        """Keep `watches` (none: forget the record)."""
        key = keys.late_copies(conversation_id)
        if not watches:
            self.redis.delete(key)
            return
        self.redis.set(key, json.dumps(watches, separators=(",", ":")), px=max(1000, int(ttl_seconds * 1000)))

    def look_again(self, conversation_id: str, due: float, now: float) -> None:
        """Bring the idle conversation back at `due`, or now when an event waits (one that
        arrives after this puts it at now itself)."""
        pipe = self.redis.pipeline()
        pipe.zadd(keys.SCHEDULE, {conversation_id: due})
        pipe.llen(keys.inbox(conversation_id))
        _, waiting = pipe.execute()
        if waiting:
            self.redis.zadd(keys.SCHEDULE, {conversation_id: now})
