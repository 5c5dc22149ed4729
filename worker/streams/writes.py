"""The stream readers' Redis writes, sent together: every write that arrives within a few
milliseconds of the first goes in one call of `stream_writes.lua`, on a connection of its
own (direct.py), the writes encoded as one JSON argument. One call per write cost about
120 us of CPU alone and 40 us pipelined, hence one call for all. With hundreds of streams
each bringing a delta every 100 ms, most writes find company within the window.

The window counts from the oldest write waiting, also for those that came while a call
was out: sent at once after it, they went in about three calls for every one the window
made (measured: 335 calls a second for 2,000 deltas, 6 writes a call)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
import structlog

from worker import keys
from worker.store.deltas import DeltaConfig
from worker.store.scripts import Arg, LuaScript
from worker.streams.direct import DirectConnection

log = structlog.get_logger("worker.streams")

# What a write waits for others. With the loop's pace (loop.py) it keeps a delta within its
# 20 ms latency budget: measured p99 15-17.4 ms (5 ms pace, 4 ms here), 23 ms (8 ms pace, none).
WINDOW_SECONDS = 0.004
MAX_WRITES = 256  # per call: a script blocks Redis while it runs


Done = Callable[[int | BaseException], None]


# A write: its item (kind batch_id owner conversation_id and the kind's own, stream_writes.lua)
# and who is told the answer, or the error. A tuple: a reader sends ten a second.
_Write = tuple[list[Any], Done]


class BatchedWrites:
    def __init__(self, connection: DirectConnection, process_id: str, config: DeltaConfig) -> None:
        self.connection = connection
        self.script = LuaScript(None, "stream_writes")
        self._keys = {"owned": keys.owned_streams(process_id), "schedule": keys.SCHEDULE, "wake": keys.WAKE}
        # A write's keys: these prefixes and its conversation id (stream_writes.lua says why).
        self._args: dict[str, Arg] = {
            "maxlen": config.maxlen, "ttl": config.ttl_seconds, "batch_prefix": keys.batch(""),
            "deltas_prefix": config.prefix, "lengths_prefix": keys.delta_lengths("")}
        self._queued: list[_Write] = []
        self._oldest_at = 0.0  # when the oldest write waiting was queued (loop time)
        self._wake = asyncio.Event()

    def send(self, item: list[Any], done: Done) -> None:
        """Queue one write; `done` is told its answer (stream_writes.lua's) once its call came back."""
        if not self._queued:
            self._oldest_at = asyncio.get_running_loop().time()
            self._wake.set()
        self._queued.append((item, done))

    async def call(self, item: list[Any]) -> int:
        """Queue one write and wait for its answer."""
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.send(item, partial(_settle, answer))
        return await answer

    async def run(self) -> None:
        """Send what is queued, a window after the oldest write waiting (at once when a
        call's worth waits)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            wait = self._oldest_at + WINDOW_SECONDS - loop.time()
            if wait > 0 and len(self._queued) < MAX_WRITES:
                await asyncio.sleep(wait)
            writes, self._queued = self._queued[:MAX_WRITES], self._queued[MAX_WRITES:]
            if self._queued:  # the rest goes next, once the oldest's window is over
                self._wake.set()
            await self._send(writes)

    async def _send(self, writes: list[_Write]) -> None:
        # UTF-8, not ASCII-escaped (orjson's only way): the script counts a message's published text in bytes.
        encoded = orjson.dumps([item for item, _ in writes])
        try:
            results: Any = await self.connection.script(self.script, self._keys,
                                                        {**self._args, "now": time.time(), "writes": encoded})
        except Exception as exc:  # noqa: BLE001 - every waiting write is told, and the writer goes on
            for _, done in writes:
                _tell(done, exc)
            return
        for (_, done), result in zip(writes, results, strict=True):
            _tell(done, result)


def _tell(done: Done, result: int | BaseException) -> None:
    try:
        done(result)
    except Exception as exc:  # one reader's failure must not stop the others' answers
        log.error("a stream write's answer failed", error=repr(exc), exc_info=exc)


def _settle(answer: asyncio.Future[int], result: int | BaseException) -> None:
    """Answer a waiting write (one whose reader was cancelled meanwhile waits no more)."""
    if answer.done():
        return
    if isinstance(result, BaseException):
        answer.set_exception(result)
    else:
        answer.set_result(result)
