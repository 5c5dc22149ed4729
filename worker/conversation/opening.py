"""Opening a batch: the events at the head of the inbox that one run answers together.

Consecutive events with the same batch key (assistant and instructions) go in one batch, up
to MAX_BATCH_EVENTS. An event that is not valid is rejected once it reaches the head: its
rejection is published and it is dead-lettered, and the events behind it run.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from worker import metrics
from worker.batch import Batch
from worker.conversation import late_copies
from worker.conversation.context import Context
from worker.conversation.transitions import Idle, Open, Transition
from worker.events import InboundEvent, InvalidEvent, salvage_ids
from worker.outcomes import rejection_entry

log = structlog.get_logger("worker.conversation")


def open_next(ctx: Context, conversation_id: str, head: list[bytes] | None = None,
              thread_id: str | None = None) -> Transition:
    """The next batch from the inbox `head` (read here when None)."""
    if head is None:
        head = ctx.store.batches.peek_inbox(conversation_id, ctx.settings.max_batch_events)
        thread_id = ctx.store.batches.thread_id(conversation_id)
    events = _leading_events(ctx, conversation_id, head)
    if not events:  # idle: a look for late copies, while some are watched for
        return Idle(late_copies.look(ctx, conversation_id))
    now = ctx.clock()
    batch = Batch.new(uuid.uuid4().hex, conversation_id, events, created_at=now,
                      thread_id=thread_id, create_sent=0, create_sent_at=now)  # the create intent goes in with it
    log.debug("batch opened", conversation_id=conversation_id, event_ids=batch.event_ids,
              batch_id=batch.batch_id, **_content(ctx, events))
    return Open(batch, taken=len(events))


def _leading_events(ctx: Context, conversation_id: str, head: list[bytes]) -> list[InboundEvent]:
    events: list[InboundEvent] = []
    for raw in head:
        try:
            event = InboundEvent.parse(raw)
            if event.conversation_id != conversation_id:
                raise InvalidEvent("conversation_id", "does not match the inbox it is in")
        except InvalidEvent as exc:
            if events:
                break  # rejected once it reaches the head, after this batch
            _reject_raw(ctx, conversation_id, raw, str(exc))
            continue
        if events and event.batch_key() != events[0].batch_key():
            break
        events.append(event)
    return events


def _reject_raw(ctx: Context, conversation_id: str, raw: bytes, reason: str) -> None:
    _, event_ids = salvage_ids(raw)
    entry = rejection_entry(conversation_id, event_ids, reason, now=ctx.clock())
    if ctx.store.outbound.reject_head(conversation_id, raw, entry.to_json(), reason):
        metrics.observe_outcome("event.rejected", None, [], None)
        log.warning("event rejected", conversation_id=conversation_id, event_ids=event_ids, reason=reason)


def _content(ctx: Context, events: list[InboundEvent]) -> dict[str, Any]:
    if ctx.settings.log_message_content:
        return {"content": [e.content for e in events]}
    return {}
