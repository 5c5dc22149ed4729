"""The producer side: accepting events into a conversation's inbox, and cancel requests.

Imported by `producers`: this module needs nothing of the worker but keys, events and Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from worker import keys
from worker.events import InboundEvent
from worker.store.scripts import LuaScript

CANCEL_REQUEST_TTL_SECONDS = 3600


class Inbox:
    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.clock = clock
        self._accept = LuaScript(client, "accept")

    def accept(self, event: InboundEvent, dedup_ttl: int) -> bool:
        """Dedup, append to the inbox, schedule, in one step. False for a repeated event id."""
        cid = event.conversation_id
        return bool(self._accept(
            keys={"dedup": keys.dedup(event.event_id), "inbox": keys.inbox(cid),
                  "schedule": keys.SCHEDULE, "wake": keys.WAKE},
            args={"conversation_id": cid, "event": event.model_dump_json(), "dedup_ttl": dedup_ttl,
                  "now": self.clock()}))

    def request_cancel(self, conversation_id: str) -> None:
        """Ask the worker to end the active batch: due now, and a sleeping scheduler woken."""
        now = self.clock()
        pipe = self.redis.pipeline()
        pipe.set(keys.cancel_request(conversation_id), now, ex=CANCEL_REQUEST_TTL_SECONDS)
        pipe.zadd(keys.SCHEDULE, {conversation_id: now}, lt=True)
        pipe.zadd(keys.SCHEDULE, {conversation_id: now}, nx=True)
        pipe.lpush(keys.WAKE, 1)
        pipe.ltrim(keys.WAKE, 0, 0)
        pipe.execute()

    def close(self) -> None:
        """Disconnect the client's pool (it reconnects if used again)."""
        self.redis.connection_pool.disconnect()
