"""One run's event stream, read on the process's loop: its text goes to the conversation's
delta stream as it comes, and the state the worker acts on (tool calls, an ending) is
stored with the batch for the next step, which is due at once. A stream that breaks stores
that it broke: the next step re-attaches (Responses) or polls. Every write is fenced by
the stream's owner: a reader that lost its stream (taken over, its batch answered) stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import structlog

from worker import metrics
from worker.backends.base import RunState, StreamTarget
from worker.store.deltas import Delta
from worker.streams import state
from worker.streams.events import Text, Translator, Update
from worker.streams.sse import Event

log = structlog.get_logger("worker.streams")

LOST, NOT_RECORDED = -1, -2  # stream_writes.lua's refusals
RECORD_WAIT_SECONDS = 30.0  # a stream whose owner is never recorded (its step died) is dropped
BROKEN_ATTEMPTS = 4
REPORT_SECONDS = 1.0  # how often a reader adds the events it read to the metric
RECORD_RETRY_SECONDS = 0.02  # the first wait for the owner's record, doubling up to a second


class Sink(Protocol):
    """Where a reader writes (worker/streams/streams.py)."""

    async def write(self, target: StreamTarget, owner: str, cursor: str, deltas: list[Delta]) -> int: ...

    async def store(self, target: StreamTarget, owner: str, document: str) -> int: ...


@dataclass
class StreamSpec:
    """What a reader needs of the call that opened its stream."""

    target: StreamTarget
    owner: str
    translator: Translator
    parse: Callable[[dict[str, Any]], RunState]
    opened_at: float
    run_id: str | None = None  # known before the first event (a re-attach, a tool round)


class StreamReader:
    def __init__(self, sink: Sink, spec: StreamSpec, events: AsyncIterator[Event]) -> None:
        self.sink = sink
        self.spec = spec
        self._events = events
        self.run_id = spec.run_id
        self.cursor: int | None = None
        self._pending: list[Delta] = []
        self._recorded = False  # the batch named this reader its stream's owner
        self._texts = 0
        self._waits = 0  # for the owner's record
        self._entries: dict[tuple[str, str], str] = {}
        self._unreported, self._reported_at = 0, time.monotonic()  # events not counted in the metric yet

    async def first(self) -> Update:
        """Read up to the first event that carries the run (a create's answer)."""
        async for event in self._events:
            update = self.spec.translator.read(event)
            self._take(update)
            if update.run is not None or update.error or update.done:
                return update
        return Update(error="the stream ended before the run was created")

    async def follow(self, first: Update | None) -> None:
        """Read to the run's state the worker acts on, or to a break."""
        if first is not None and await self._acted_on(first):
            return
        async for event in self._events:
            update = self.spec.translator.read(event)
            self._take(update)
            if await self._acted_on(update):
                return
        await self._broken("the server ended the stream before the run's end", resumable=False)

    def _take(self, update: Update) -> None:
        self._unreported += 1
        self._report()
        if update.run is not None and update.run.get("id"):
            self.run_id = str(update.run["id"])
        if update.cursor is not None:
            self.cursor = update.cursor
        self._pending.extend(self._delta(t) for t in update.texts)

    async def _acted_on(self, update: Update) -> bool:
        """Write what the update brought; True when the reader is done."""
        if update.error:
            await self._broken(update.error)
            return True
        if self._pending and not await self._flush():
            return True
        if update.ended and update.run is not None:
            await self._store(state.encode_run(self.spec.parse(update.run)))
            return True
        if update.done:
            await self._broken("the server ended the stream before the run's end", resumable=False)
            return True
        return False

    async def broken_off(self, reason: str) -> None:
        """The connection failed (or the process hands its streams over): say so, with the
        text that came before (Redis failing too is tried again; at worst the safety poll
        finds the run, its stream gone)."""
        for attempt in range(BROKEN_ATTEMPTS):
            try:
                if self._pending and not await self._flush():
                    return
                await self._broken(reason)
                return
            except redis.RedisError as exc:
                log.warning("stream break not stored yet", conversation_id=self.spec.target.conversation_id,
                            error=str(exc), attempt=attempt + 1)
                await asyncio.sleep(0.2 * 2 ** attempt)

    async def _broken(self, reason: str, resumable: bool = True) -> None:
        log.info("stream broken", conversation_id=self.spec.target.conversation_id, run_id=self.run_id, reason=reason)
        await self._store(state.encode_broken(reason, resumable))

    def _report(self, now: bool = False) -> None:
        """The events read, in the metric once a second (and at the end): a counter's
        increment (multiprocess mode) costs as much as reading a small event."""
        at = time.monotonic()
        if self._unreported and (now or at - self._reported_at >= REPORT_SECONDS):
            metrics.STREAM_EVENTS.inc(self._unreported)
            self._unreported, self._reported_at = 0, at

    async def _flush(self) -> bool:
        """Write the pending deltas with the cursor; False when the stream is not ours."""
        deadline = time.monotonic() + RECORD_WAIT_SECONDS
        while True:
            cursor = f"{self.run_id} {self.cursor}" if self.cursor is not None and self.run_id else ""
            written = await self.sink.write(self.spec.target, self.spec.owner, cursor, self._pending)
            if written >= 0:
                self._observe_first(written)
                self._pending, self._recorded = [], True
                return True
            if not await self._may_wait(written, deadline):
                return False

    async def _store(self, document: str) -> None:
        self._report(now=True)
        deadline = time.monotonic() + RECORD_WAIT_SECONDS
        while (stored := await self.sink.store(self.spec.target, self.spec.owner, document)) < 0:
            if not await self._may_wait(stored, deadline):
                return

    async def _may_wait(self, refusal: int, deadline: float) -> bool:
        """Before the batch records this reader as its owner (the step that opened the
        stream writes it after the run id came back), its writes wait; after, or once the
        batch moved on, they are refused for good."""
        if refusal == LOST or self._recorded or time.monotonic() > deadline:
            return False
        self._waits += 1
        await asyncio.sleep(min(1.0, RECORD_RETRY_SECONDS * 2 ** min(self._waits - 1, 6)))
        return True

    def _observe_first(self, written: int) -> None:
        if written and not self._texts:
            metrics.STREAM_FIRST_DELTA.observe(max(0.0, time.time() - self.spec.opened_at))
        self._texts += written

    def _delta(self, text: Text) -> Delta:
        """A message.delta; its entry's JSON is made once per message (a reply has a hundred)."""
        target, run = self.spec.target, self.run_id or ""
        entry = self._entries.get((run, text.message_id))
        if entry is None:
            fields = {"type": "message.delta", "conversation_id": target.conversation_id,
                      "event_ids": target.event_ids, "run_id": run or None, "message_id": text.message_id}
            entry = self._entries[(run, text.message_id)] = json.dumps(fields, separators=(",", ":"))
        return Delta("message.delta", run, message_id=text.message_id, text=text.text, at=self.cursor,
                     entry_json=entry)
