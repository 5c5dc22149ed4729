"""Streams on the wire: sources that hand out a record's events when due, the driver that plays them
(waiting without the store's lock), cancel signals, the stream_cut switch and the stream log."""

from __future__ import annotations

import itertools
import json
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import render
from .errors import bad_request
from .objects import WORKING_STATUSES, ModelResponse, Run
from .streams import FINAL, Event, response_events, run_events

if TYPE_CHECKING:
    from .store import Store

LOG_LIMIT = 200_000  # stream-log records kept (the newest)
RETRY_SECONDS = 0.005  # a due event that could not be sent yet (the record not settled) is tried again after this
_RESPONSE_ENDINGS = {"completed": "response.completed", "failed": "response.failed",
                     "incomplete": "response.incomplete"}
_LOG_FIELDS = ("stream", "id", "object", "event", "item_id", "index", "sequence_number", "at")
Sent = tuple[str, Any, Event | None]  # (event name, data, the event it comes from)


@dataclass(slots=True)
class Chunk:
    data: bytes  # one SSE event, encoded
    log: list[Any] | None = None  # the stream-log record (its time set when written) for deltas and endings
    cut: bool = False  # close the connection abruptly instead (stream_cut)


@dataclass
class StreamResponse:
    """A 200 text/event-stream answer: the server writes the chunks as the iterator yields them."""

    chunks: Iterator[Chunk]
    on_disconnect: Callable[[], None]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    record_id: str
    kind: str
    events: list[Event]

    def peek(self) -> Event | None: ...
    def take(self) -> list[Sent]: ...
    def interrupt(self) -> None: ...
    def abandon(self) -> None: ...


class RunSource:
    """The stream of a run's current phase; a cancel replaces what is left by cancelling, cancelled."""

    kind = "thread.run"

    def __init__(self, store: Store, run: Run, op: str) -> None:
        self.store, self.run, self.record_id = store, run, run.id
        self.events = run_events(store, run, op)
        self.pos, self.cancelled = 0, False

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
        self.events = response_events(store, response)
        self.pos = max(0, starting_after + 1)

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


class StreamHub:
    """Plays streams, wakes them on a cancel, cuts some (stream_cut) and keeps the stream log."""

    def __init__(self, clock: Callable[[], float], seed: int | None = None) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._watchers: dict[str, set[threading.Event]] = {}
        self._log: deque[list[Any]] = deque(maxlen=LOG_LIMIT)
        self._serial = itertools.count(1)

    def poke(self, record_id: str) -> None:
        """Wake the open streams of a run or response (a cancel)."""
        with self._lock:
            for signal in self._watchers.get(record_id, ()):
                signal.set()

    def play(self, source: Source, cut_probability: float) -> Iterator[Chunk]:
        serial = next(self._serial)
        cut_at = self._cut_time(source, cut_probability)
        signal = threading.Event()
        with self._lock:
            self._watchers.setdefault(source.record_id, set()).add(signal)
        try:
            while (event := source.peek()) is not None:
                if self._wait(event.at, signal):
                    signal.clear()
                    source.interrupt()
                    continue
                if cut_at is not None and event.at > cut_at:
                    yield Chunk(b"", [serial, source.record_id, source.kind, "cut", None, None, None], cut=True)
                    return
                sent = source.take()
                if not sent:
                    signal.wait(RETRY_SECONDS)
                for name, data, origin in sent:
                    yield Chunk(encode(name, data), _log_record(serial, source, name, data, origin))
        finally:
            with self._lock:
                watchers = self._watchers.get(source.record_id, set())
                watchers.discard(signal)
                if not watchers:
                    self._watchers.pop(source.record_id, None)

    def sent(self, record: list[Any], at: float) -> None:
        """A chunk with a log record was written (or, for a cut, the connection closed) at `at`."""
        self._log.append([*record, at])

    def log(self) -> list[dict[str, Any]]:
        return [dict(zip(_LOG_FIELDS, record, strict=True)) for record in list(self._log)]

    def reset(self) -> None:
        self._log.clear()

    def _cut_time(self, source: Source, probability: float) -> float | None:
        first = source.peek()
        if first is None or probability <= 0:
            return None
        with self._lock:
            if self.rng.random() >= probability:
                return None
            end = max(first.at, source.events[-1].at)
            return self.rng.uniform(first.at, end)

    def _wait(self, at: float, signal: threading.Event) -> bool:
        """Wait until `at` (True if a signal came first)."""
        while True:
            left = at - self.clock()
            if left <= 0:
                return False
            if signal.wait(left):
                return True


def encode(name: str, data: Any) -> bytes:
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\ndata: {body}\n\n".encode()


def _log_record(serial: int, source: Source, name: str, data: Any, origin: Event | None) -> list[Any] | None:
    if origin is None:  # done
        return None
    if origin.index is None and origin.name != FINAL and name != "thread.run.cancelling":
        return None  # neither a delta nor an ending
    number = data.get("sequence_number") if isinstance(data, dict) else None
    return [serial, source.record_id, source.kind, name, origin.item_id, origin.index, number]
