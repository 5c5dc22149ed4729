"""Handing user messages to the worker: validation, then one atomic accept step in Redis."""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from typing import Any, Self

import redis
from pydantic import ValidationError

from worker.events import CONVERSATION_ID, InboundEvent, InvalidEvent, invalid_from
from worker.redis_client import make_redis, stream_entries
from worker.settings import Settings, get_settings
from worker.store.inbox import Inbox

# The standard library's logging: silent unless the application configures it (the
# worker's configure_logging turns `extra` into structured fields).
log = logging.getLogger("producers")


class Producer:
    """Sends events through one Redis connection pool; safe to share between threads."""

    def __init__(self, settings: Settings | None = None, client: redis.Redis | None = None) -> None:
        self.settings = settings or get_settings()
        self.redis: redis.Redis = client or make_redis(self.settings)
        self.inbox = Inbox(self.redis)
        self._owns_client = client is None

    def close(self) -> None:
        """Disconnect the Redis pool this producer made (a later send reconnects); a client
        passed in is left to its owner."""
        if self._owns_client:
            self.inbox.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send_user_message(self, conversation_id: str, content: str, *, event_id: str | None = None,
                          assistant_id: str | None = None, instructions: str | None = None,
                          metadata: dict[str, str] | None = None,
                          attachments: list[dict[str, Any]] | None = None) -> str:
        """Accept a user message; returns its event id. Raises InvalidEvent (a ValueError)
        naming the field, or a redis error when nothing was accepted (retry with the same id)."""
        try:
            event = InboundEvent.model_validate({
                "event_id": event_id or str(uuid.uuid4()), "conversation_id": conversation_id,
                "content": content, "assistant_id": assistant_id, "instructions": instructions,
                "metadata": metadata or {}, "attachments": attachments or [], "sent_at": time.time()})
        except ValidationError as exc:
            raise invalid_from(exc) from None
        accepted = self.inbox.accept(event, self.settings.event_dedup_ttl_seconds)
        log.info("accepted" if accepted else "repeat ignored",
                 extra={"conversation_id": conversation_id, "event_ids": [event.event_id]})
        return event.event_id

    def cancel_conversation(self, conversation_id: str) -> None:
        """End the conversation's active batch (run.cancelled); waiting events run after."""
        if not isinstance(conversation_id, str) or not CONVERSATION_ID.match(conversation_id):
            raise InvalidEvent("conversation_id", "must be 1-128 characters of [A-Za-z0-9._:@-]")
        self.inbox.request_cancel(conversation_id)

    def outbound_position(self) -> str:
        """The id of the newest outbound entry ("0-0" when empty), to read what follows."""
        last = stream_entries(self.redis.xrevrange(self.settings.outbound_stream, count=1))
        return last[0][0] if last else "0-0"

    def wait_for(self, event_id: str, after: str, timeout: float) -> dict[str, Any] | None:
        """The outbound entry answering `event_id`, published after `after`, or None."""
        deadline = time.monotonic() + timeout
        position = after
        while (remaining := deadline - time.monotonic()) > 0:
            block_ms = max(1, int(min(remaining, 1.0) * 1000))
            reply: Any = self.redis.xread({self.settings.outbound_stream: position},
                                           count=100, block=block_ms)
            for _, rows in reply or []:
                for entry_id, fields in stream_entries(rows):
                    position = entry_id
                    entry: dict[str, Any] = json.loads(fields[b"data"])
                    if event_id in entry.get("event_ids", []):
                        return entry
        return None


@functools.cache
def default_producer() -> Producer:
    """The process's producer for the module-level functions, made on first use."""
    return Producer()


def send_user_message(conversation_id: str, content: str, event_id: str | None = None,
                      assistant_id: str | None = None, instructions: str | None = None,
                      metadata: dict[str, str] | None = None,
                      attachments: list[dict[str, Any]] | None = None) -> str:
    return default_producer().send_user_message(
        conversation_id, content, event_id=event_id, assistant_id=assistant_id,
        instructions=instructions, metadata=metadata, attachments=attachments)


def cancel_conversation(conversation_id: str) -> None:
    default_producer().cancel_conversation(conversation_id)
