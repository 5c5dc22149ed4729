"""Finding the outbound entry that answers something: waiting for it from a position, or
searching back through what the stream still holds (a repeated event id's earlier answer)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from worker.redis_client import stream_entries

Entry = dict[str, Any]
PAGE = 500  # entries read per XREVRANGE while searching back


def wait_for(client: redis.Redis, stream: str, match: Callable[[Entry], bool], after: str,
             timeout: float) -> Entry | None:
    """The first entry published after `after` that `match`es, or None after `timeout` s."""
    deadline = time.monotonic() + timeout
    position = after
    while (remaining := deadline - time.monotonic()) > 0:
        block_ms = max(1, int(min(remaining, 1.0) * 1000))
        reply: Any = client.xread({stream: position}, count=100, block=block_ms)
        for _, rows in reply or []:
            for entry_id, fields in stream_entries(rows):
                position = entry_id
                entry = _parse(fields)
                if entry is not None and match(entry):
                    return entry
    return None


def find_answer(client: redis.Redis, stream: str, event_id: str) -> Entry | None:
    """The newest entry whose `event_ids` hold `event_id`, among all the stream holds."""
    # Parsing every entry is slow on a long stream: only one whose raw text holds the id
    # (as JSON writes it) can list it; an id with control characters is looked for by parsing.
    needle = json.dumps(event_id, ensure_ascii=False)[1:-1].encode()
    plain = all(ord(c) >= 0x20 for c in event_id)
    end = "+"
    while True:
        rows = stream_entries(client.xrevrange(stream, max=end, count=PAGE))
        for _, fields in rows:
            if plain and needle not in fields.get(b"data", b""):
                continue
            entry = _parse(fields)
            if entry is not None and event_id in entry.get("event_ids", []):
                return entry
        if len(rows) < PAGE:
            return None
        end = "(" + rows[-1][0]


def _parse(fields: dict[bytes, bytes]) -> Entry | None:
    try:
        entry: Any = json.loads(fields[b"data"])
    except (KeyError, ValueError):
        return None  # not an entry of the worker's: skipped
    return entry if isinstance(entry, dict) else None
