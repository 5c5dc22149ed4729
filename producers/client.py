"""Handing user messages to the worker: validation, then one atomic accept step in Redis."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Self

import redis
from pydantic import ValidationError

from producers import answers
from producers.deltas import DeltaReader, delta_position
from worker.events import CONVERSATION_ID, InboundEvent, InvalidEvent, invalid_from
from worker.redis_client import make_redis, stream_entries
from worker.settings import Settings, get_settings
from worker.store.inbox import Inbox

# The standard library's logging: silent unless the application configures it (the
# worker's configure_logging turns `extra` into structured fields).
log = logging.getLogger("producers")


@dataclass(frozen=True)
class SendResult:
    """What `Producer.send` did: `accepted` is False for a repeat of an event id accepted
    before (within EVENT_DEDUP_TTL_SECONDS), which was ignored: the first content wins."""

    event_id: str
    accepted: bool


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
        return self.send(conversation_id, content, event_id=event_id, assistant_id=assistant_id,
                         instructions=instructions, metadata=metadata, attachments=attachments).event_id

    def send(self, conversation_id: str, content: str, *, event_id: str | None = None,
             assistant_id: str | None = None, instructions: str | None = None,
             metadata: dict[str, str] | None = None,
             attachments: list[dict[str, Any]] | None = None) -> SendResult:
        """`send_user_message`, also saying whether the event was new or a repeat."""
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
        return SendResult(event.event_id, accepted)

    def cancel_conversation(self, conversation_id: str) -> bool:
        """End the conversation's active batch (run.cancelled follows, asynchronously);
        waiting events run after. Returns whether a batch was active (False: nothing to do)."""
        if not isinstance(conversation_id, str) or not CONVERSATION_ID.match(conversation_id):
            raise InvalidEvent("conversation_id", "must be 1-128 characters of [A-Za-z0-9._:@-]")
        return self.inbox.request_cancel(conversation_id)

    def outbound_position(self) -> str:
        """The id of the newest outbound entry ("0-0" when empty), to read what follows."""
        last = stream_entries(self.redis.xrevrange(self.settings.outbound_stream, count=1))
        return last[0][0] if last else "0-0"

    def wait_for(self, event_id: str, after: str, timeout: float) -> dict[str, Any] | None:
        """The outbound entry answering `event_id`, published after `after`, or None."""
        return answers.wait_for(self.redis, self.settings.outbound_stream,
                                lambda entry: event_id in entry.get("event_ids", []), after, timeout)

    def delta_position(self, conversation_id: str) -> str:
        """The id of the conversation's newest delta entry ("0-0" when none): take it
        before sending, to follow the answer's deltas from there (`delta_reader`)."""
        return delta_position(self.redis, conversation_id, prefix=self.settings.delta_stream_prefix)

    def delta_reader(self, conversation_id: str, event_id: str, *, position: str,
                     outbound_position: str | None = None) -> DeltaReader:
        """A reader of the deltas of the batch answering `event_id` from `position` on;
        with `outbound_position` (`outbound_position()` before sending) it ends with the
        outbound entry that answers the event, deltas or none."""
        outbound = None if outbound_position is None else (self.settings.outbound_stream, outbound_position)
        return DeltaReader(self.redis, conversation_id, event_id, position=position,
                           prefix=self.settings.delta_stream_prefix, outbound=outbound)

    def find_answer(self, event_id: str) -> dict[str, Any] | None:
        """The outbound entry that answered `event_id` already, if the stream still holds it."""
        return answers.find_answer(self.redis, self.settings.outbound_stream, event_id)


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


def cancel_conversation(conversation_id: str) -> bool:
    return default_producer().cancel_conversation(conversation_id)
