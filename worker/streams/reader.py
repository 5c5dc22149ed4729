"""One run's event stream, read on the process's loop: its text goes to the conversation's
delta stream as it comes, and the state the worker acts on (tool calls, an ending) is
stored with the batch for the next step, which is due at once. A stream that breaks stores
that it broke: the next step re-attaches (Responses) or polls. Every write is fenced by
the stream's owner: a reader that lost its stream (taken over, its batch answered) stops.

A reader is fed each chunk of bytes by its connection's callback (client.py), and handles
it in one go: no task wakes per chunk. Nor does it wait for its text's writes: one write is
in flight at a time (what comes meanwhile goes with the next, in order), and its answer
comes back by a callback. Waiting for each would wake the reader twice per delta.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import redis
import structlog

from worker import metrics
from worker.backends.base import StreamTarget
from worker.streams import sse, state
from worker.streams.events import Parse, Text, Translator, Update

log = structlog.get_logger("worker.streams")
T = TypeVar("T")

LOST, NOT_RECORDED = -1, -2  # stream_writes.lua's refusals
RECORD_WAIT_SECONDS = 30.0  # a stream whose owner is never recorded (its step died) is dropped
BROKEN_ATTEMPTS = 4
REPORT_SECONDS = 1.0  # how often a reader adds the events it read to the metric
RECORD_RETRY_SECONDS = 0.02  # the first wait for the owner's record, doubling up to a second
Written = Callable[[int | BaseException], None]
# A text delta as stream_writes.lua takes it: message_id, the entry's JSON without `seq` and
# `text` (made once per message), the text, the event's sequence number (-1: none). A tuple:
# a reply has a hundred.
TextDelta = tuple[str, str, str, int]


class Sink(Protocol):
    """Where a reader writes (worker/streams/streams.py)."""

    def send(self, target: StreamTarget, owner: str, cursor: str, deltas: list[TextDelta], done: Written) -> None:
        """Queue a write of text deltas; `done` gets its answer (or the error)."""

    async def store(self, target: StreamTarget, owner: str, document: str) -> int: ...


@dataclass
class StreamSpec:
    """What a reader needs of the call that opened its stream."""

    target: StreamTarget
    owner: str
    translator: Translator
    parse: Parse
    opened_at: float
    run_id: str | None = None  # known before the first event (a re-attach, a tool round)


class StreamReader:
    """Fed by its stream's connection as the bytes come (`feed`, `ended`, on the loop); the
    task that follows the stream waits only for what ends it (`follow`)."""

    def __init__(self, sink: Sink, spec: StreamSpec, pace: Callable[[], None] = lambda: None) -> None:
        self.sink = sink
        self.spec = spec
        self._pace = pace  # told of each chunk read (StreamLoop.pace)
        self._parser = sse.Parser()
        self.run_id = spec.run_id
        self.cursor: int | None = None
        self._pending: list[TextDelta] = []
        self._sending: list[TextDelta] = []  # the write in flight's
        self._on_written = self._written  # one bound method, not one per write
        self._writes = _Writes()
        self._texts = 0
        self._entries: dict[tuple[str, str], str] = {}
        self._unreported, self._reported_at = 0, time.monotonic()  # events not counted in the metric yet
        loop = asyncio.get_running_loop()
        # A create's first event that carries the run (None: the run is known already), or the failure.
        self._first: asyncio.Future[Update | BaseException] | None = (
            loop.create_future() if spec.run_id is None else None)
        self._before_first = self._first is not None  # events are read for it
        # What ends the reading: the update it ends on, the connection's failure, or None (the
        # stream is not ours any more, or a write failed). Values, not exceptions: nobody may wait.
        self._outcome: asyncio.Future[Update | BaseException | None] = loop.create_future()

    # --- the connection's calls ------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        """A chunk of the body: its events handled at once, its text's write sent."""
        if self._outcome.done():
            return
        self._pace()
        try:
            self._handle(self._parser.feed(chunk))
        except Exception as exc:  # noqa: BLE001 - the reader's own failure: its task raises it (Streams logs it)
            self._stop(exc)

    def ended(self, failure: BaseException | None) -> None:
        """The body's end (None), or its connection's failure."""
        if self._outcome.done():
            return
        if failure is not None:
            self._stop(failure)
            return
        try:
            self._handle(self._parser.end())
        except Exception as exc:  # noqa: BLE001 - as in feed
            self._stop(exc)
            return
        if self._before_first:
            self._stop(Update(error="the stream ended before the run was created"))
        else:
            self._stop(Update(done=True))

    def _handle(self, events: list[sse.Event]) -> None:
        self._unreported += len(events)
        texts_of = self.spec.translator.texts
        for event in events:
            if self._before_first:
                if self._before_run(event):
                    return
                continue
            found = texts_of(event)  # most events: text, which only adds to what is pending
            if found is not None:
                self._add(*found)
                continue
            update = self._take(event)
            if update is not None and _final(update):
                self._stop(update)
                return
        self._send()

    def _before_run(self, event: sse.Event) -> bool:
        """An event before the one that carries the run; True: it ended the stream."""
        update = self._take(event)
        if update is None or (update.run is None and not update.error and not update.done):
            return False
        _resolve(self._first, update)
        self._before_first = False
        if _final(update):
            self._stop(update)
            return True
        return False

    def _stop(self, outcome: Update | BaseException | None) -> None:
        _resolve(self._first, outcome if outcome is not None else Update(error="the stream stopped"))
        self._before_first = False
        _resolve(self._outcome, outcome)

    # --- the task's calls --------------------------------------------------------------------
    async def first(self) -> Update:
        """The first event that carries the run (a create's answer); raises the
        connection's failure."""
        assert self._first is not None, "the run is known already"
        first = await self._first
        if isinstance(first, BaseException):
            raise first
        return first

    async def follow(self) -> None:
        """Until the run's state the worker acts on is stored, or a break is (raises the
        connection's failure, or a write's)."""
        outcome = await self._outcome
        self._writes.check()
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is not None and not self._writes.lost:
            await self._final(outcome)

    def _take(self, event: sse.Event) -> Update | None:
        update = self.spec.translator.read(event)
        if update is None:
            return None
        if update.run is not None and update.run.get("id"):
            self.run_id = str(update.run["id"])
        self._add(update.texts, update.cursor)
        return update

    def _add(self, texts: list[Text], cursor: int | None) -> None:
        """An event's texts, pending until the next write; its sequence number the cursor."""
        if cursor is not None:
            self.cursor = cursor
        for text in texts:
            self._pending.append(self._delta(text))

    async def _final(self, update: Update) -> None:
        """The text written, then what the update means stored: an error or the stream's end
        (a break), or the run's state."""
        self._report(now=True)
        if not await self._drain():
            return
        if update.error:
            await self._broken(update.error)
        elif update.ended and update.run is not None:
            await self._store(state.encode_run(self.spec.parse(update.run, update.messages)))
        else:
            await self._broken("the server ended the stream before the run's end", resumable=False)

    async def broken_off(self, reason: str) -> None:
        """The connection failed (or the process hands its streams over): say so, with the
        text that came before (Redis failing too is tried again; at worst the safety poll
        finds the run, its stream gone)."""
        self._stop(None)  # what the connection still brings is not read
        for attempt in range(BROKEN_ATTEMPTS):
            try:
                if await self._drain():
                    await self._broken(reason)
                return
            except redis.RedisError as exc:
                log.warning("stream break not stored yet", conversation_id=self.spec.target.conversation_id,
                            error=str(exc), attempt=attempt + 1)
                await asyncio.sleep(0.2 * 2 ** attempt)

    async def _broken(self, reason: str, resumable: bool = True) -> None:
        log.info("stream broken", conversation_id=self.spec.target.conversation_id, run_id=self.run_id, reason=reason)
        await self._store(state.encode_broken(reason, resumable))

    # --- the text's writes -----------------------------------------------------------------
    def _send(self) -> None:
        """Write what is pending, unless a write is in flight (or waits to be tried again)."""
        writes = self._writes
        if not self._pending or writes.busy or writes.lost or writes.failure is not None:
            return
        self._sending, self._pending = self._pending, []
        writes.in_flight = True
        cursor = f"{self.run_id} {self.cursor}" if self.cursor is not None and self.run_id else ""
        self.sink.send(self.spec.target, self.spec.owner, cursor, self._sending, self._on_written)

    def _written(self, result: int | BaseException) -> None:
        writes, deltas = self._writes, self._sending
        writes.in_flight, self._sending = False, []
        if isinstance(result, BaseException):
            self._pending[:0] = deltas  # tried again by broken_off, in order
            writes.failure = result
            self._stop(None)
        elif result >= 0:
            self._observe_first(result)
            writes.recorded = True
        elif (delay := writes.may_wait(result)) is not None:
            self._pending[:0] = deltas
            writes.retry = asyncio.get_running_loop().call_later(delay, self._retried)
        else:
            writes.lost = True
            self._stop(None)
        self._send()
        writes.settled()

    def _retried(self) -> None:
        self._writes.retry = None
        self._send()

    async def _drain(self) -> bool:
        """Every pending delta written; False when the stream is not ours (raises what a
        write raised)."""
        while (self._pending or self._writes.busy) and not self._writes.lost:
            self._send()
            await self._writes.idle()
            self._writes.check()
        return not self._writes.lost

    async def _store(self, document: str) -> None:
        while (stored := await self.sink.store(self.spec.target, self.spec.owner, document)) < 0:
            delay = self._writes.may_wait(stored)
            if delay is None:
                return
            await asyncio.sleep(delay)

    def _report(self, now: bool = False) -> None:
        """The events read, in the metric once a second (and at the end): a counter's
        increment (multiprocess mode) costs as much as reading a small event."""
        at = time.monotonic()
        if self._unreported and (now or at - self._reported_at >= REPORT_SECONDS):
            metrics.STREAM_EVENTS.inc(self._unreported)
            self._unreported, self._reported_at = 0, at

    def _observe_first(self, written: int) -> None:
        if written and not self._texts:
            metrics.STREAM_FIRST_DELTA.observe(max(0.0, time.time() - self.spec.opened_at))
        self._texts += written
        self._report()

    def _delta(self, text: Text) -> TextDelta:
        """A message.delta; its entry's JSON is made once per message."""
        target, run = self.spec.target, self.run_id or ""
        entry = self._entries.get((run, text.message_id))
        if entry is None:
            fields = {"type": "message.delta", "conversation_id": target.conversation_id,
                      "event_ids": target.event_ids, "run_id": run or None, "message_id": text.message_id}
            entry = self._entries[(run, text.message_id)] = json.dumps(fields, separators=(",", ":"))
        return text.message_id, entry, text.text, -1 if self.cursor is None else self.cursor


def _resolve(future: asyncio.Future[T] | None, value: T) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _final(update: Update) -> bool:
    """The update ends what the reader does: an error, the run's end, the stream's end."""
    return bool(update.error) or update.done or (update.ended and update.run is not None)


class _Writes:
    """A reader's write in flight, and what the answers said."""

    def __init__(self) -> None:
        self.in_flight = False
        self.retry: asyncio.TimerHandle | None = None  # a refused write tried again later
        self.recorded = False  # the batch named this reader its stream's owner
        self.lost = False  # refused for good: the stream is not this reader's
        self.failure: BaseException | None = None  # a write failed (Redis): raised by `check`
        self._waits = 0  # for the owner's record
        self._deadline: float | None = None
        self._idle: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        return self.in_flight or self.retry is not None

    def may_wait(self, refusal: int) -> float | None:
        """How long to wait before trying a refused write again; None: refused for good.
        Before the batch records the reader as its owner (the step that opened the stream
        writes it after the run id came back), its writes wait, up to RECORD_WAIT_SECONDS
        from the first refusal; after, or once the batch moved on, they are refused for good."""
        if self._deadline is None:
            self._deadline = time.monotonic() + RECORD_WAIT_SECONDS
        if refusal == LOST or self.recorded or time.monotonic() > self._deadline:
            return None
        self._waits += 1
        return float(min(1.0, RECORD_RETRY_SECONDS * 2 ** min(self._waits - 1, 6)))

    async def idle(self) -> None:
        """Until the write in flight (or waiting) has its answer."""
        if not self.busy:
            return
        self._idle = asyncio.get_running_loop().create_future()
        await self._idle

    def settled(self) -> None:
        if self._idle is not None and not self._idle.done() and not self.busy:
            self._idle.set_result(None)

    def check(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
