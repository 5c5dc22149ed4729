"""Streams of records: sources that hand out a record's events when they are due (played by hub.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import render
from .errors import bad_request
from .objects import WORKING_STATUSES, ModelResponse, Run
from .streams import FINAL, Event, response_events, response_opening, run_opening, run_rest

if TYPE_CHECKING:
    from .store import Store

_RESPONSE_ENDINGS = {"completed": "response.completed", "failed": "response.failed",
                     "incomplete": "response.incomplete"}
Sent = tuple[str, Any, Event | None]  # (event name, data, the event it comes from)


@dataclass
class StreamResponse:
    """A 200 text/event-stream answer: the server hands the source to the StreamHub, which writes its events."""

    source: Source
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    record_id: str
    kind: str
    events: list[Event]

    def build(self) -> None: ...
    def peek(self) -> Event | None: ...
    def take(self) -> list[Sent]: ...
    def interrupt(self) -> None: ...
    def abandon(self) -> None: ...


class RunSource:
    """The stream of a run's current phase; a cancel replaces what is left by cancelling, cancelled."""

    kind = "thread.run"

    def __init__(self, store: Store, run: Run, op: str) -> None:
        self.store, self.run, self.record_id = store, run, run.id
        self.events = run_opening(store, run, op)
        self.pos, self.cancelled = 0, False

    def build(self) -> None:
        """The rest of the events (without the lock: the work a burst of streams would queue on)."""
        self.events.extend(run_rest(self.store, self.run))

    def peek(self) -> Event | None:
        return self.events[self.pos] if self.pos < len(self.events) else None

    def take(self) -> list[Sent]:
        event = self.events[self.pos]
        if event.data is not None and (self.cancelled or self.run.status not in ("cancelling", "cancelled")):
            self.pos += 1
            return [(event.name, event.data, event)]
        store, run = self.store, self.run
        with store.lock:
            now = store.clock()
            store.settle_run(run, now)
            if run.status in ("cancelling", "cancelled") and not self.cancelled:
                self._cancel_tail(now)
                return []
            if event.name != FINAL:  # thread.run.in_progress, rendered as it is now
                self.pos += 1
                return [(event.name, render.run(run, store.flavour), event)]
            if run.status in WORKING_STATUSES or run.status == "cancelling":
                event.at = run.due_at if run.status in WORKING_STATUSES else (run.cancel_due or now)
                return []
            self.pos += 1
            return [("thread.run." + run.status, render.run(run, store.flavour), event), ("done", "[DONE]", None)]

    def interrupt(self) -> None:
        with self.store.lock:
            now = self.store.clock()
            self.store.settle_run(self.run, now)
            if self.run.status in ("cancelling", "cancelled") and not self.cancelled:
                self._cancel_tail(now)

    def abandon(self) -> None:
        """A run goes on when its stream's client goes away (poll it)."""

    def _cancel_tail(self, now: float) -> None:
        self.cancelled = True
        data = render.run(self.run, self.store.flavour)
        data["status"] = "cancelling"
        tail = [Event(now, "thread.run.cancelling", data), Event(self.run.cancel_due or now, FINAL)]
        self.events = self.events[:self.pos] + tail


class ResponseSource:
    """The stream of a response, from `starting_after + 1`: a pure function of the response and time."""

    kind = "response"

    def __init__(self, store: Store, response: ModelResponse, starting_after: int = -1) -> None:
        self.store, self.response, self.record_id = store, response, response.id
        self.events, self._items = response_opening(store, response)
        self.pos = max(0, starting_after + 1)

    def build(self) -> None:
        """The rest of the events (without the lock: the work a burst of streams would queue on)."""
        self.events = response_events(self.store, self.response, self.events, self._items)

    def peek(self) -> Event | None:
        return self.events[self.pos] if self.pos < len(self.events) else None

    def take(self) -> list[Sent]:
        event, response = self.events[self.pos], self.response
        if response.status == "cancelled" and event.at >= (response.finished_at or 0.0):
            self.pos = len(self.events)  # no event tells a cancel (the spec has none): the stream ends
            return []
        if event.data is not None:
            self.pos += 1
            return [(event.name, event.data, event)]
        store = self.store
        with store.lock:
            store.conversations.settle(response, store.clock())
            if response.status in WORKING_STATUSES:
                return []
            if response.status == "cancelled":
                self.pos = len(self.events)
                return []
            name = _RESPONSE_ENDINGS[response.status]
            data = {"type": name, "response": render.response(response, store.flavour), "sequence_number": self.pos}
            self.pos += 1
            return [(name, data, event)]

    def interrupt(self) -> None:
        """Nothing to do: take() sees a cancel in the response's status."""

    def abandon(self) -> None:
        if not self.response.background:
            with self.store.lock:
                self.store.conversations.abandon(self.response, self.store.clock())


def open_source(store: Store, op: str, record: Any, query: dict[str, str]) -> Source:
    """The stream of what a streamed operation returned (store lock held)."""
    if isinstance(record, Run):
        return RunSource(store, record, op)
    assert isinstance(record, ModelResponse)
    if op != "getResponse":
        return ResponseSource(store, record)
    if not (record.background and record.stream):
        raise bad_request(f"Response {record.id} cannot be streamed: only a response created with background "
                          "and stream set to true can be.", param="stream")
    try:
        starting_after = int(query.get("starting_after", -1))
    except ValueError:
        raise bad_request("Invalid type for 'starting_after': expected an integer.", param="starting_after",
                          code="invalid_type") from None
    return ResponseSource(store, record, starting_after)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # json.dumps would make one per call


def encode(name: str, data: Any) -> bytes:
    """One server-sent event: `event: name`, `data: JSON` (or the string as it is: [DONE])."""
    body = data if isinstance(data, str) else _ENCODER.encode(data)
    return f"event: {name}\ndata: {body}\n\n".encode()


def log_record(serial: int, source: Source, name: str, data: Any, origin: Event | None) -> list[Any] | None:
    if origin is None:  # done
        return None
    if origin.index is None and origin.name != FINAL and name != "thread.run.cancelling":
        return None  # neither a delta nor an ending
    number = data.get("sequence_number") if isinstance(data, dict) else None
    return [serial, source.record_id, source.kind, name, origin.item_id, origin.index, number]
