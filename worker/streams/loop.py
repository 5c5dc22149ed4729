"""One asyncio loop on its own thread per worker process: it reads every run stream the
process has open. Started when the process boots (never at import, never in the parent
that forks the processes); a step thread hands it coroutines and waits for their results.
Nothing blocking runs on it, but for the pace's bounded sleep below: `/healthz` fails when
its tick stops (`stuck`).

A busy loop is paced (`pace`). Hundreds of streams, each bringing a chunk every 100 ms or
so, would wake the loop for almost every chunk: a thousand wake-ups a second, each a
context switch and a round of the loop's own work. A round that read a chunk ends with a
short sleep, so that the next round starts `ROUND_SECONDS` after this one and finds many
sockets ready at once. An idle loop never sleeps so; a busy one adds at most
`ROUND_SECONDS` to what waits on it (a delta, a step's call). Measured with
`python -m bench.threads`, alternating: the loop's CPU per run 16.1 -> 11.6 ms, its
wake-ups 70 -> 17 per run. With `python -m bench compare ... --only streaming` (3 runs
each): worker CPU per run 0.83 times (Assistants), 0.90 (Responses); delta latency p99
11-14.5 -> 16-17.4 ms (budget 20, with the write window 8 -> 4 ms).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_new_loop: Callable[[], asyncio.AbstractEventLoop]
try:  # about half the CPU of asyncio's own loop per stream event (measured: 24 against 49 us)
    import uvloop

    _new_loop = uvloop.new_event_loop
except ImportError:  # pragma: no cover - not built for this platform: asyncio's loop does the same work
    _new_loop = asyncio.new_event_loop

T = TypeVar("T")
TICK_SECONDS = 1.0
ROUND_SECONDS = 0.005  # a busy loop's rounds start at least this far apart
STUCK_SECONDS = 10.0  # no tick for this long: something blocks the loop


class Pacer:
    """Keeps a busy loop's rounds `seconds` apart: `pause` sleeps what is left of this
    round's time (nothing when the round started long enough ago)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.seconds = seconds
        self._clock = clock
        self._sleep = sleep
        self._round_at = -seconds  # when the current round started

    def pause(self) -> None:
        wait = self._round_at + self.seconds - self._clock()
        if wait > 0:
            self._sleep(wait)  # releases the GIL: the step threads go on meanwhile
        self._round_at = self._clock()


class StreamLoop:
    def __init__(self, pacer: Pacer | None = None) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.last_tick = 0.0
        self._ticker: asyncio.Task[None] | None = None
        self._pacer = pacer or Pacer(ROUND_SECONDS)
        self._pause_due = False

    def pace(self) -> None:
        """A chunk was read (on the loop): this round ends with the pacer's pause (once)."""
        if not self._pause_due and self._loop is not None:
            self._pause_due = True
            self._loop.call_soon(self._pause_soon)

    def _pause_soon(self) -> None:
        # One hop more, behind the callbacks this round's chunks woke (the writer's send).
        assert self._loop is not None
        self._loop.call_soon(self._pause)

    def _pause(self) -> None:
        self._pause_due = False
        self._pacer.pause()

    def ticked_at(self) -> float | None:
        """When the loop last went round (wall time; None when it does not run)."""
        return self.last_tick if self.running else None

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.is_running()

    def start(self) -> None:
        """Start the loop's thread (once) and wait until it runs."""
        if self._thread is not None:
            return
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="stream-loop", daemon=True)
        self._thread.start()
        ready.wait(10.0)

    def _run(self, ready: threading.Event) -> None:
        loop = _new_loop()
        self._loop = loop
        loop.call_soon(ready.set)
        self._ticker = loop.create_task(self._tick())
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _tick(self) -> None:
        while True:
            self.last_tick = time.time()
            await asyncio.sleep(TICK_SECONDS)

    def stuck(self) -> bool:
        return self.running and time.time() - self.last_tick > STUCK_SECONDS

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coroutine` on the loop; its future (from any thread)."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the stream loop is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coroutine` on the loop and wait for its result (a step thread's call)."""
        future = self.submit(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop, self._thread = None, None
