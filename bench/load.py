"""Driving load through the producers and reading the replies off the outbound stream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

import redis

from bench.stack import OUTBOUND
from bench.waits import Deadline
from producers import Producer
from worker.settings import Settings


def make_producer(redis_url: str) -> Producer:
    return Producer(Settings(redis_url=redis_url))


@dataclass
class Sent:
    """Send times (epoch seconds, taken just before each accept call) by event id."""

    at: dict[str, float] = field(default_factory=dict)
    conversation: dict[str, str] = field(default_factory=dict)

    @property
    def first(self) -> float:
        return min(self.at.values())

    @property
    def last(self) -> float:
        return max(self.at.values())

    def __len__(self) -> int:
        return len(self.at)


def send_burst(producer: Producer, conversations: Iterable[str], text: Callable[[int], str],
               threads: int = 4) -> Sent:
    """One message to each conversation, as fast as `threads` senders go."""
    sent = Sent()
    lock = threading.Lock()

    def send(item: tuple[int, str]) -> None:
        index, cid = item
        at = time.time()
        event_id = producer.send_user_message(cid, text(index))
        with lock:
            sent.at[event_id] = at
            sent.conversation[event_id] = cid

    with ThreadPoolExecutor(threads, thread_name_prefix="send") as pool:
        list(pool.map(send, enumerate(conversations)))
    return sent


def send_paced(producer: Producer, rate: float, seconds: float, conversation: Callable[[int], str],
               text: Callable[[int], str], sent: Sent, start_index: int = 0, threads: int = 1) -> int:
    """`rate` messages a second for `seconds`, message i due at start + i / rate (sent at once when
    late), on `threads` senders taking every threads-th message; returns how many were sent."""
    start = time.time()
    count = round(rate * seconds)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def sender(first: int) -> None:
        try:
            for i in range(first, count, threads):
                delay = start + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                index = start_index + i
                cid = conversation(index)
                at = time.time()
                event_id = producer.send_user_message(cid, text(index))
                with lock:
                    sent.at[event_id] = at
                    sent.conversation[event_id] = cid
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            failures.append(exc)

    if threads == 1:
        sender(0)
    else:
        workers = [threading.Thread(target=sender, args=(k,), name=f"send-{k}", daemon=True)
                   for k in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]
    return count


@dataclass
class Reply:
    stream_id: str
    published: float  # when Redis appended it (the stream id's milliseconds)
    data: dict[str, Any]


class Outbound:
    """The outbound stream's entries from now on (earlier ones, e.g. the warm-up's, are left out):
    how many, and the entries read incrementally."""

    def __init__(self, client: redis.Redis, stream: str = OUTBOUND) -> None:
        self.client = client
        self.stream = stream
        self.replies: list[Reply] = []
        self._base = int(client.xlen(stream))
        newest = client.xrevrange(stream, count=1)
        self._after = "(" + newest[0][0].decode() if newest else "-"

    def length(self) -> int:
        """Entries appended since this reader was made."""
        return int(self.client.xlen(self.stream)) - self._base

    def wait_length(self, count: int, deadline: Deadline, check: Callable[[], None] | None = None,
                    interval: float = 0.1) -> float:
        """Poll XLEN until it reaches `count`; returns the time it was seen."""
        while self.length() < count:
            if check is not None:
                check()
            deadline.sleep(interval)
        return time.time()

    def read_new(self) -> list[Reply]:
        """Entries appended since the last call, oldest first (also kept in `replies`)."""
        new: list[Reply] = []
        while True:
            chunk = self.client.xrange(self.stream, min=self._after, count=5000)
            if not chunk:
                break
            for raw_id, fields in chunk:
                stream_id = raw_id.decode()
                published = int(stream_id.split("-")[0]) / 1000.0
                new.append(Reply(stream_id, published, json.loads(fields[b"data"])))
            self._after = "(" + chunk[-1][0].decode()
        self.replies.extend(new)
        return new


class Sampler:
    """Calls `probe` every `interval` seconds on a thread and keeps what it returns."""

    def __init__(self, probe: Callable[[], dict[str, Any]], interval: float = 0.2) -> None:
        self.probe = probe
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            begun = time.monotonic()
            try:
                self.samples.append({"t": time.time(), **self.probe()})
            except Exception as exc:  # noqa: BLE001 - a sample lost is not a failed scenario
                self.errors.append(repr(exc))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - begun)))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
