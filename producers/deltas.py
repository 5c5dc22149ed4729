"""Following one batch's deltas (docs/contract.md, "Deltas"): what the worker writes to a
conversation's delta stream while it answers an event, read as typed items, to show the
reply as it is written.

Take the stream's position before sending, then follow from there:

    position = delta_position(client, "user-42")
    event_id = producer.send_user_message("user-42", "hello")
    for item in follow_deltas(client, "user-42", event_id, position=position, timeout=300):
        ...

Only the entries of the batch that answers `event_id` count (their `event_ids` hold it);
following ends at that batch's `run.ended`. With `outbound=(stream, position)` it also
watches the outbound stream and ends with the entry that answers the event (`Answered`),
which comes also when the worker writes no deltas (`DELTAS=off`, a rejected event).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from worker.redis_client import StreamEntries, stream_entries, text

DEFAULT_PREFIX = "assistant:deltas:"
# A wait is cut into slices shorter than the client's socket timeout (10 s at least).
_WAIT_SLICE_S = 1.0
_COUNT = 100  # entries per read and stream


@dataclass(frozen=True)
class Started:
    """The batch's first run (or response) exists: show "typing"."""

    run_id: str | None


@dataclass(frozen=True)
class Restarted:
    """Another run of the batch started (a retried run, a run on a new thread): drop what
    was shown; `dropped` is the text shown so far, per message id."""

    run_id: str | None
    dropped: Mapping[str, str]


@dataclass(frozen=True)
class Text:
    """Text to append to the message `message_id`; `new_message`: the message's first text
    (after another message's, separate them)."""

    message_id: str
    text: str
    new_message: bool


@dataclass(frozen=True)
class ToolCalls:
    """The run asks for these tools (one name per call, in its order)."""

    run_id: str | None
    tools: tuple[str, ...]


@dataclass(frozen=True)
class Ended:
    """The batch's `run.ended`: `outcome` is its outbound entry's type."""

    outcome: str
    message_ids: tuple[str, ...]


@dataclass(frozen=True)
class Answered:
    """The outbound entry that answers the event (only when following with `outbound`)."""

    entry: dict[str, Any]


DeltaItem = Started | Restarted | Text | ToolCalls | Ended | Answered


def delta_key(conversation_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return prefix + conversation_id


def delta_position(client: redis.Redis, conversation_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """The id of the conversation's newest delta entry ("0-0" when none): take it before
    sending, and follow from it."""
    last = stream_entries(client.xrevrange(delta_key(conversation_id, prefix), count=1))
    return last[0][0] if last else "0-0"


def follow_deltas(client: redis.Redis, conversation_id: str, event_id: str, *, position: str, timeout: float,
                  prefix: str = DEFAULT_PREFIX, outbound: tuple[str, str] | None = None) -> Iterator[DeltaItem]:
    """The items of the batch answering `event_id`, from `position` on, until its
    `run.ended` (with `outbound`: until its outbound entry), or until `timeout` seconds passed."""
    reader = DeltaReader(client, conversation_id, event_id, position=position, prefix=prefix, outbound=outbound)
    return reader.follow(timeout)


def _parse(fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    try:
        data: Any = json.loads(fields[b"data"])
    except (KeyError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class DeltaReader:
    """Reads the deltas of the batch answering `event_id` on the conversation's stream, from
    `position` on. `messages` holds the text per message id since the batch's last
    `run.started` (`text`: joined by blank lines); `entries` counts the batch's entries
    taken, `ignored` those out of order (a `seq` not above the last one's), `missed` the
    `seq` numbers skipped (entries trimmed before they were read). With `outbound`
    (`(stream key, position)`) it also watches the outbound stream for the event's answer
    (`answer`). Use it from one thread."""

    def __init__(self, client: redis.Redis, conversation_id: str, event_id: str, *, position: str = "0-0",
                 prefix: str = DEFAULT_PREFIX, outbound: tuple[str, str] | None = None) -> None:
        self.redis = client
        self.key = delta_key(conversation_id, prefix)
        self.event_id = event_id
        self.position = position
        self.outbound = outbound
        self.messages: dict[str, str] = {}
        self.run_id: str | None = None
        self.started = False
        self.ended: Ended | None = None
        self.answer: dict[str, Any] | None = None
        self.entries = self.ignored = self.missed = 0
        self._last_seq = 0

    @property
    def done(self) -> bool:
        """The end was read: the answer when watching the outbound stream, else run.ended."""
        return self.answer is not None if self.outbound is not None else self.ended is not None

    @property
    def text(self) -> str:
        return "\n\n".join(self.messages.values())

    def follow(self, timeout: float) -> Iterator[DeltaItem]:
        """The items as they come, until `done` or `timeout` seconds from the first call."""
        deadline = time.monotonic() + timeout
        while not self.done and (remaining := deadline - time.monotonic()) > 0:
            yield from self.read(max(1, int(min(remaining, _WAIT_SLICE_S) * 1000)))

    def read(self, block_ms: int = 0) -> list[DeltaItem]:
        """What arrived since the last read, oldest first; waits up to `block_ms` (0: not
        at all) while nothing did."""
        if self.done:
            return []
        streams: dict[Any, Any] = {} if self.ended else {self.key: self.position}
        if self.outbound is not None:
            streams[self.outbound[0]] = self.outbound[1]
        reply: Any = self.redis.xread(streams, count=_COUNT, block=block_ms or None)
        rows = {text(name): stream_entries(found) for name, found in reply or []}
        items = self._deltas(rows.get(self.key, []))
        if self.outbound is not None:
            answer = self._find_answer(self.outbound[0], rows.get(self.outbound[0], []))
            if answer is not None:
                items += self._catch_up()  # deltas written before the answer, not read yet
                self.answer = answer
                items.append(Answered(answer))
        return items

    def _catch_up(self) -> list[DeltaItem]:
        items: list[DeltaItem] = []
        while self.ended is None:
            rows = stream_entries(self.redis.xrange(self.key, min="(" + self.position, count=_COUNT))
            if not rows:
                break
            items += self._deltas(rows)
        return items

    def _find_answer(self, stream: str, rows: StreamEntries) -> dict[str, Any] | None:
        for entry_id, fields in rows:
            self.outbound = (stream, entry_id)
            entry = _parse(fields)
            if entry is not None and self.event_id in entry.get("event_ids", []):
                return entry
        return None

    def _deltas(self, rows: StreamEntries) -> list[DeltaItem]:
        items: list[DeltaItem] = []
        for entry_id, fields in rows:
            self.position = entry_id
            delta = _parse(fields)
            if self.ended or delta is None or self.event_id not in (delta.get("event_ids") or []):
                continue
            if not self._in_order(delta.get("seq")):
                continue
            self.entries += 1
            item = self._item(delta)
            if item is not None:
                items.append(item)
        return items

    def _in_order(self, seq: object) -> bool:
        if not isinstance(seq, int) or seq <= self._last_seq:
            self.ignored += 1
            return False
        self.missed += seq - self._last_seq - 1
        self._last_seq = seq
        return True

    def _item(self, delta: dict[str, Any]) -> DeltaItem | None:
        kind, run_id = delta.get("type"), delta.get("run_id")
        if kind == "run.started":
            return self._run_started(run_id)
        if kind == "message.delta":
            return self._text(str(delta.get("message_id")), str(delta.get("text") or ""))
        if kind == "tool.calls":
            return ToolCalls(run_id, tuple(str(t) for t in delta.get("tools") or []))
        if kind == "run.ended":
            self.ended = Ended(str(delta.get("outcome") or ""), tuple(str(m) for m in delta.get("message_ids") or []))
            return self.ended
        return None  # a type this reader does not know (one added later): skipped

    def _run_started(self, run_id: str | None) -> DeltaItem | None:
        if not self.started:
            self.started, self.run_id = True, run_id
            return Started(run_id)
        if run_id == self.run_id:
            return None
        self.run_id = run_id
        dropped, self.messages = self.messages, {}
        return Restarted(run_id, dropped)

    def _text(self, message_id: str, part: str) -> Text:
        new = message_id not in self.messages
        self.messages[message_id] = self.messages.get(message_id, "") + part
        return Text(message_id, part, new)
