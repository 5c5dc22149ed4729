"""One asyncio loop on its own thread per worker process: it reads every run stream the
process has open. Started when the process boots (never at import, never in the parent
that forks the processes); a step thread hands it coroutines and waits for their results.
Nothing blocking runs on it: `/healthz` fails when its tick stops (`stuck`).
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
STUCK_SECONDS = 10.0  # no tick for this long: something blocks the loop


class StreamLoop:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.last_tick = 0.0
        self._ticker: asyncio.Task[None] | None = None

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
