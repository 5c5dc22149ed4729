"""The step after a stream reached a state the worker acts on (tool calls, an ending, a
break), run in the process that read it, at once. The script that stores the state claims
the conversation for it, as the scheduler's claim does (the schedule's score moves
`LEASE_SECONDS` ahead: a process that dies with the step comes due again by itself), so
the step needs no scheduler round and no Dramatiq message: measured with
`python -m bench.threads`, the worker's CPU per streamed run 21.6 -> 18.3 ms (its scheduler
thread 2.2 -> 1.1, its Dramatiq consumer 2.1 -> 1.5).

A few threads of their own, with room for a few claims each: when they are all taken the
stream's state makes the conversation due instead, and the scheduler sends it the usual
way. A step that fails (Redis lost meanwhile) or that stopping leaves unstarted makes its
conversation due at once, for whichever process comes next.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable

import structlog

from worker import health

log = structlog.get_logger("worker.streams")

ROOM_PER_THREAD = 4  # claims waiting or running, per thread


class NextSteps:
    def __init__(self, advance: Callable[[str, float], None], release: Callable[[str], None], *,
                 threads: int, lease_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._advance = advance  # ConversationService.advance
        self._release = release  # the conversation due now (Schedule.put)
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="next-step")
        self._room = threads * ROOM_PER_THREAD
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._taken = 0
        self._queued: dict[concurrent.futures.Future[None], str] = {}
        self._closed = False

    def reserve(self) -> float:
        """A claim's score for a step to come (0.0: no room; the conversation goes the
        scheduler's way)."""
        with self._lock:
            if self._closed or self._taken >= self._room:
                return 0.0
            self._taken += 1
        return self._clock() + self.lease_seconds

    def cancel(self) -> None:
        """A reserved claim not made after all (its write was refused, or failed)."""
        with self._lock:
            self._taken -= 1

    def start(self, conversation_id: str, claimed: float) -> None:
        """Run the conversation's step on one of the threads (never waits)."""
        with self._lock:
            if self._closed:
                self._taken -= 1
                self._release_now(conversation_id)
                return
            future = self._pool.submit(self._step, conversation_id, claimed)
            self._queued[future] = conversation_id
        future.add_done_callback(self._done)

    def _step(self, conversation_id: str, claimed: float) -> None:
        health.step_started()
        try:
            self._advance(conversation_id, claimed)
        except Exception as exc:  # noqa: BLE001 - the next process takes it (its claim let go)
            log.warning("next step failed: left to the scheduler", conversation_id=conversation_id,
                        error=repr(exc))
            self._release_now(conversation_id)
        finally:
            health.step_ended()

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._taken -= 1
            conversation_id = self._queued.pop(future, None)
        if future.cancelled() and conversation_id is not None:
            self._release_now(conversation_id)

    def _release_now(self, conversation_id: str) -> None:
        try:
            self._release(conversation_id)
        except Exception as exc:  # noqa: BLE001 - Redis lost too: the claim expires by itself
            log.warning("next step not let go: its claim expires", conversation_id=conversation_id,
                        error=repr(exc))

    def close(self, timeout: float = 10.0) -> None:
        """No more steps: those not started are let go (due now), those running finish."""
        with self._lock:
            self._closed = True
            queued = list(self._queued)
        for future in queued:
            future.cancel()  # its done callback lets the conversation go
        self._pool.shutdown(wait=False)
        concurrent.futures.wait(queued, timeout)
