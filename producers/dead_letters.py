"""Dead letters: events the worker rejected, kept with their reason in `aw:deadletter`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import redis

from producers.client import Producer
from worker import keys
from worker.events import InvalidEvent
from worker.redis_client import stream_entries, text

_RETRY_SUFFIX = re.compile(r"^(?P<base>.*):r(?P<n>\d+)$")


@dataclass(frozen=True)
class DeadLetter:
    id: str
    reason: str
    raw: str


def list_dead_letters(producer: Producer, count: int = 100) -> list[DeadLetter]:
    rows = stream_entries(producer.redis.xrange(keys.DEAD_LETTERS, count=count))
    return [_letter(entry_id, fields) for entry_id, fields in rows]


def find_dead_letter(producer: Producer, letter_id: str) -> DeadLetter | None:
    """The dead letter with this id, or None (also for a text that is no stream id)."""
    try:
        rows = stream_entries(producer.redis.xrange(keys.DEAD_LETTERS, letter_id, letter_id))
    except redis.ResponseError:
        return None  # "Invalid stream ID": it names no dead letter
    return next((_letter(entry_id, fields) for entry_id, fields in rows), None)


def _letter(entry_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(entry_id, text(fields.get(b"reason", b"")), text(fields.get(b"raw", b"")))


def next_event_id(event_id: str) -> str:
    """`abc` -> `abc:r1`, `abc:r1` -> `abc:r2`: a requeued event gets its own entry."""
    match = _RETRY_SUFFIX.match(event_id)
    if match:
        return f"{match['base']}:r{int(match['n']) + 1}"
    return f"{event_id}:r1"


def requeue(producer: Producer, letter: DeadLetter) -> str:
    """Send a dead letter again under a new event id and drop it; raises InvalidEvent (and
    keeps it) when it still cannot be a valid event."""
    try:
        data: Any = json.loads(letter.raw)
    except ValueError:
        raise InvalidEvent("event", "not valid JSON: it cannot be sent again") from None
    if not isinstance(data, dict) or not isinstance(data.get("event_id"), str):
        raise InvalidEvent("event_id", "missing: it cannot be sent again")
    event_id = producer.send_user_message(
        data.get("conversation_id"), data.get("content"),  # type: ignore[arg-type]  # anything: validated there
        event_id=next_event_id(data["event_id"]), assistant_id=data.get("assistant_id"),
        instructions=data.get("instructions"), metadata=data.get("metadata"),
        attachments=data.get("attachments"))
    producer.redis.xdel(keys.DEAD_LETTERS, letter.id)
    return event_id
