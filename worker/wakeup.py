"""Dramatiq's Redis consumers look for messages by polling: when idle, each sleeps up to its
timeout between looks. A short timeout makes every step that comes due wait less, but
makes an idle worker spend CPU looking. Most messages a worker process consumes were sent
by the same process (its scheduler's claims, its steps' tool calls), so a send here wakes
the process's consumers at once, and the idle wait (WORKER_IDLE_POLL_MS) only bounds how
late messages sent by other processes are seen.

That wait is the consumers' own, not Dramatiq's worker timeout: Dramatiq's worker threads
wake at that timeout too, to see whether they should stop (a message for them wakes them
at once), and each wake-up costs CPU (40 to 100 us on this host, more than the look): the
worker threads keep Dramatiq's default, a second (cli.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from dramatiq.message import Message

MISS_BACKOFF_MS = 5  # the wrapped consumer's own wait after a miss, before ours
# The delay queues hold only Dramatiq's own retries of a failed step (500 ms backoff at
# least; the project's waits are its schedule): looked at once a second, never woken. Woken
# and polled like the queue, they cost as many fetches again (a third of the consumer's CPU).
DELAY_QUEUE_POLL_MS = 1000


class _Wakeups:
    """A counter of sends in this process and the condition consumers wait on."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.sent = 0

    def notify(self) -> None:
        with self._condition:
            self.sent += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Wait until something was sent after `seen`, at most `timeout` seconds."""
        with self._condition:
            self._condition.wait_for(lambda: self.sent != seen, timeout)


class WakeableRedisBroker(RedisBroker):
    """A RedisBroker whose consumers wake when this process enqueues a message."""

    def __init__(self, *args: Any, idle_poll_ms: int = 40, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # unannotated in dramatiq 2.x
        self.wakeups = _Wakeups()
        self.idle_poll_ms = idle_poll_ms

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name == dq_name(queue_name):
            return super().consume(queue_name, prefetch, max(timeout, DELAY_QUEUE_POLL_MS))
        inner = super().consume(queue_name, prefetch, min(self.idle_poll_ms, MISS_BACKOFF_MS))
        return _WakeableConsumer(inner, self.wakeups, self.idle_poll_ms / 1000.0)

    def close(self) -> None:
        # RedisBroker.close does nothing: its pool's sockets would wait for the garbage
        # collector. Disconnect them (the pool reconnects if the broker is used again).
        self.client.connection_pool.disconnect()

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        enqueued = super().enqueue(message, delay=delay)
        if delay is None:  # a delayed message is moved to its queue later, by a consumer
            self.wakeups.notify()
        return enqueued


class _WakeableConsumer(Consumer):
    def __init__(self, inner: Consumer, wakeups: _Wakeups, idle_seconds: float) -> None:
        self._inner = inner
        self._wakeups = wakeups
        self._idle_seconds = idle_seconds

    def __iter__(self) -> _WakeableConsumer:
        return self

    def __next__(self) -> MessageProxy | None:
        seen = self._wakeups.sent  # read before looking, so a send meanwhile is not missed
        message = next(self._inner)
        if message is None:
            self._wakeups.wait(seen, self._idle_seconds)
        return message

    def ack(self, message: MessageProxy) -> None:
        self._inner.ack(message)

    def nack(self, message: MessageProxy) -> None:
        self._inner.nack(message)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        self._inner.requeue(messages)

    def close(self) -> None:
        self._inner.close()
