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
        self._cancel = LuaScript(client, "cancel")

    def accept(self, event: InboundEvent, dedup_ttl: int) -> bool:
        """Dedup, append to the inbox, schedule, in one step. False for a repeated event id."""
        cid = event.conversation_id
        return bool(self._accept(
            keys={"dedup": keys.dedup(event.event_id), "inbox": keys.inbox(cid),
                  "schedule": keys.SCHEDULE, "wake": keys.WAKE},
            args={"conversation_id": cid, "event": event.model_dump_json(), "dedup_ttl": dedup_ttl,
                  "now": self.clock()}))

    def request_cancel(self, conversation_id: str) -> bool:
        """Ask the worker to end the active batch (due now, a sleeping scheduler woken);
        False, and nothing written, when the conversation has no batch left to answer."""
        return bool(self._cancel(
            keys={"batch": keys.batch(conversation_id), "cancel_request": keys.cancel_request(conversation_id),
                  "schedule": keys.SCHEDULE, "wake": keys.WAKE},
            args={"conversation_id": conversation_id, "now": self.clock(), "ttl": CANCEL_REQUEST_TTL_SECONDS}))

    def close(self) -> None:
        """Disconnect the client's pool (it reconnects if used again)."""
        self.redis.connection_pool.disconnect()
