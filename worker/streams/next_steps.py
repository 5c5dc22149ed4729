"""The step after a stream reached a state the worker acts on (tool calls, an ending, a
break), run in the process that read it, at once. The script that stores the state claims
the conversation for it, as the scheduler's claim does (the schedule's score moves
`LEASE_SECONDS` ahead: a process that dies with the step comes due again by itself), so
the step needs no scheduler round and no Dramatiq message: measured with
`python -m bench.threads`, the worker's CPU per streamed run 21.6 -> 18.3 ms (its scheduler
thread 2.2 -> 1.1, its Dramatiq consumer 2.1 -> 1.5).

A few threads of their own, a claim each: when they are all busy, the stream's state makes
the conversation due instead, and the scheduler sends it the usual way (no step waits
behind a slow one). A step that fails (Redis lost meanwhile) or that stopping leaves
unstarted makes its conversation due at once, for whichever process comes next.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import structlog

from worker import health

log = structlog.get_logger("worker.streams")

_STOP = ("", 0.0)  # a thread's last item


class NextSteps:
    def __init__(self, advance: Callable[[str, float], None], release: Callable[[str], None], *,
                 threads: int, lease_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._advance = advance  # ConversationService.advance
        self._release = release  # the conversation due now (Schedule.put)
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._room = threads
        self._taken = 0  # claims reserved: waiting for their write, queued or running
        self._closed = False
        self._queue: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        # Daemon threads, as Dramatiq's: a step that hangs does not keep a stopping process alive.
        self._threads = [threading.Thread(target=self._serve, name=f"next-step-{n}", daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def reserve(self) -> float:
        """A claim's score for a step to come (0.0: every thread busy; the conversation
        goes the scheduler's way)."""
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
        """Run the conversation's step on one of the threads (never waits: called on the loop)."""
        with self._lock:
            closed = self._closed
        if closed:  # let go, off the loop (a Redis call)
            threading.Thread(target=self._let_go, args=(conversation_id,), daemon=True).start()
        else:
            self._queue.put((conversation_id, claimed))

    def _serve(self) -> None:
        while (item := self._queue.get()) != _STOP:
            conversation_id, claimed = item
            with self._lock:
                closed = self._closed
            if closed:
                self._let_go(conversation_id)
            else:
                self._step(conversation_id, claimed)
                self._free()

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

    def _let_go(self, conversation_id: str) -> None:
        self._release_now(conversation_id)
        self._free()

    def _free(self) -> None:
        with self._lock:
            self._taken -= 1

    def _release_now(self, conversation_id: str) -> None:
        try:
            self._release(conversation_id)
        except Exception as exc:  # noqa: BLE001 - Redis lost too: the claim expires by itself
            log.warning("next step not let go: its claim expires", conversation_id=conversation_id,
                        error=repr(exc))

    def close(self, timeout: float = 10.0) -> None:
        """No more steps: those not started are let go (due now), those running finish
        (waited for up to `timeout`)."""
        with self._lock:
            self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
