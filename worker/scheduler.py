"""The schedule drainer: one thread per worker process turns due conversations into work.

Conversations wait on a Redis sorted set scored by due time. Each tick claims what is due
(atomically, so two workers never take the same item, pushing it `lease_seconds` ahead so a
claim whose worker died comes due again) and sends one Dramatiq message per chunk of
conversations. A poll therefore costs a share of one plain message, not a delayed message.
Between ticks the thread sleeps until the next due time (at most `interval`), and a
producer's new event wakes it at once (a blocking pop on a one-element wake list).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dramatiq
import redis
import structlog

from worker.store.schedule import Schedule

log = structlog.get_logger("worker.scheduler")

# Polls due within this much of each other go out together: one Dramatiq message for many
# conversations instead of one each (a message costs more CPU than a poll).
COALESCE_SECONDS = 0.03

Claims = list[tuple[str, float]]


class Scheduler:
    def __init__(self, schedule: Schedule, dispatch: Callable[[Claims], None], *,
                 chunk_size: int, lease_seconds: float, interval: float,
                 claim_limit: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self.schedule = schedule
        self.dispatch = dispatch
        self.chunk_size = chunk_size
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.claim_limit = claim_limit
        self.clock = clock
        self.last_loop_at: float | None = None  # read by the health heartbeat

    def tick(self) -> tuple[int, float]:
        """Claim what is due and dispatch it; returns how many were claimed and how long
        to sleep before the next tick (until the next due time, at most `interval`)."""
        now = self.clock()
        claim_until = now + self.lease_seconds
        due, next_due = self.schedule.claim_due(now + COALESCE_SECONDS / 2, self.claim_limit, claim_until)
        for start in range(0, len(due), self.chunk_size):
            self.dispatch([(cid, claim_until) for cid in due[start:start + self.chunk_size]])
        sleep = self.interval if next_due is None else min(self.interval, next_due - self.clock())
        return len(due), max(sleep, COALESCE_SECONDS if due else 0.0)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.last_loop_at = time.time()
            try:
                claimed, sleep = self.tick()
                if claimed < self.claim_limit and sleep > 0:
                    self.schedule.wait_for_wake(sleep)  # a producer's new event ends it early
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("scheduler tick failed", error=str(exc))
                stop.wait(1.0)


class SchedulerMiddleware(dramatiq.Middleware):
    """Runs a Scheduler thread for as long as the Dramatiq worker of this process runs."""

    def __init__(self, make_scheduler: Callable[[], Scheduler],
                 on_shutdown: Callable[[], None] | None = None) -> None:
        self.make_scheduler = make_scheduler
        self.on_shutdown = on_shutdown
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scheduler: Scheduler | None = None

    def last_loop_at(self) -> float | None:
        return self._scheduler.last_loop_at if self._scheduler is not None else None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        scheduler = self._scheduler = self.make_scheduler()
        self._thread = threading.Thread(target=scheduler.run, args=(self._stop,),
                                        name="assistant-scheduler", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
