"""One thread plays every open stream: thousands of streams cost one heap entry each, not a waking thread.

A connection's thread writes the stream's head, hands its socket and source to the hub and sleeps
until the stream is over; the hub's thread pops whichever stream is due, queues its due events
(sources hand them out, see sse.py) and writes them without blocking (a client that does not read
keeps its bytes in an outbox, and is dropped once that holds more than MAX_OUTBOX_BYTES). It holds
the store's lock only inside a source's take(), briefly. It also cuts streams (stream_cut), wakes
a stream when its run or response is cancelled, and keeps the stream log.
"""

from __future__ import annotations

import heapq
import itertools
import random
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from .sse import Source, encode, log_record

LOG_LIMIT = 200_000  # stream-log records kept (the newest)
RETRY_SECONDS = 0.005  # a due event not ready yet, or an outbox not written yet, is tried again after this
EARLY_SECONDS = 0.002  # how much before its time a precomputed event may be written
MAX_OUTBOX_BYTES = 4 * 1024 * 1024
LOG_FIELDS = ("stream", "id", "object", "event", "item_id", "index", "sequence_number", "at")


class Player:
    """One open stream: its source, its socket, the bytes not yet written and their log records."""

    def __init__(self, source: Source, sock: socket.socket, serial: int, cut_at: float | None) -> None:
        self.source, self.sock, self.serial, self.cut_at = source, sock, serial, cut_at
        self.outbox = bytearray()
        self.logs: list[list[Any]] = []
        self.due: float | None = None  # its heap entry's time (stale entries are skipped)
        self.interrupted = False
        self.finished = False  # every event (or the cut) queued
        self.cut = False
        self.failed = False  # the client went away (or would not read)
        self.done = threading.Event()

    def advance(self, now: float) -> float | None:
        """Queue every event due by `now`; the time the next one is due, or None once the stream is over."""
        source = self.source
        if self.interrupted:
            self.interrupted = False
            source.interrupt()
        while not self.finished and (event := source.peek()) is not None:
            # A delta may go up to EARLY_SECONDS before its time (one wake serves a dense batch); an event
            # rendered when sent (in_progress, the ending) waits for its exact time.
            wake = event.at if event.data is None else event.at - EARLY_SECONDS
            if wake > now:
                return wake
            if self.cut_at is not None and event.at > self.cut_at:
                self.cut = self.finished = True
                self.logs.append([self.serial, source.record_id, source.kind, "cut", None, None, None])
                return None
            sent = source.take()
            if not sent and source.peek() is event and event.at <= now:
                return now + RETRY_SECONDS  # the record is not settled yet
            for name, data, origin in sent:
                chunk = encode(name, data)
                self.outbox += b"%x\r\n%s\r\n" % (len(chunk), chunk)
                record = log_record(self.serial, source, name, data, origin)
                if record is not None:
                    self.logs.append(record)
        if not self.finished:
            self.finished = True
            self.outbox += b"0\r\n\r\n"
        return None

    def flush(self, log: Callable[[list[Any], float], None]) -> bool:
        """Write what the socket takes now; True once the outbox is empty (or the client is gone)."""
        try:
            while self.outbox:
                written = self.sock.send(self.outbox, socket.MSG_DONTWAIT)
                del self.outbox[:written]
        except BlockingIOError:
            if len(self.outbox) > MAX_OUTBOX_BYTES:
                self.failed = True
            return self.failed
        except OSError:
            self.failed = True
            return True
        at = time.time()
        for record in self.logs:
            log(record, at)
        self.logs.clear()
        return True


class StreamHub:
    """Plays streams on one thread, wakes them on a cancel, cuts some (stream_cut), keeps the stream log."""

    def __init__(self, clock: Callable[[], float], seed: int | None = None) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Player]] = []
        self._order = itertools.count()
        self._serial = itertools.count(1)
        self._watchers: dict[str, set[Player]] = {}
        self._log: deque[list[Any]] = deque(maxlen=LOG_LIMIT)
        self._log_lock = threading.Lock()  # copying a deque while another thread appends would fail
        self._thread: threading.Thread | None = None
        self._stopped = False

    def play(self, source: Source, sock: socket.socket, cut_probability: float) -> Player:
        """Start playing `source` on `sock` (its head already written); wait on the player's `done`."""
        with self._cond:
            player = Player(source, sock, next(self._serial), self._cut_time(source, cut_probability))
        # The events due now are written by the calling thread: the hub's thread wakes for what comes later.
        now = self.clock()
        try:
            next_at = player.advance(now)
            flushed = player.flush(self._log_sent)
        except Exception:  # noqa: BLE001 - a bug in the emulator: end this stream
            traceback.print_exc(file=sys.stderr)
            player.failed, flushed, next_at = True, True, None
        with self._cond:
            if self._stopped or player.failed or (flushed and next_at is None):
                player.failed = player.failed or self._stopped
                player.done.set()
                return player
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="emulator-streams", daemon=True)
                self._thread.start()
            self._watchers.setdefault(source.record_id, set()).add(player)
            self._push(player, now + RETRY_SECONDS if not flushed else next_at or now)
        return player

    def poke(self, record_id: str) -> None:
        """Wake the open streams of a run or response (a cancel)."""
        with self._cond:
            for player in self._watchers.get(record_id, ()):
                player.interrupted = True
                self._push(player, self.clock())

    def cut(self, record_id: str) -> None:
        """Break the open streams of a run now (its thread was deleted): no more events, no end."""
        with self._cond:
            now = self.clock()
            for player in self._watchers.get(record_id, ()):
                player.cut_at = now
                self._push(player, now)

    def log(self) -> list[dict[str, Any]]:
        with self._log_lock:
            records = list(self._log)
        return [dict(zip(LOG_FIELDS, record, strict=True)) for record in records]

    def reset(self) -> None:
        with self._log_lock:
            self._log.clear()

    def reseed(self, seed: int | None) -> None:
        with self._cond:
            self.rng.seed(seed)

    def stop(self) -> None:
        """End every stream (their connections are closed by the server) and the hub's thread."""
        with self._cond:
            self._stopped = True
            players = [player for watchers in self._watchers.values() for player in watchers]
            self._watchers.clear()
            self._cond.notify_all()
        for player in players:
            player.failed = True
            player.done.set()

    def _push(self, player: Player, at: float) -> None:
        if player.due is not None and player.due <= at:
            return  # already due sooner
        player.due = at
        heapq.heappush(self._heap, (at, next(self._order), player))
        if self._heap[0][2] is player:
            self._cond.notify()  # due before what the hub's thread waits for

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._wait_due()
                if due is None:
                    return
            now = self.clock()
            for player in due:
                self._serve(player, now)

    def _wait_due(self) -> list[Player] | None:
        """The players due now (cond held); None once stopped."""
        while not self._stopped:
            now = self.clock()
            if self._heap and self._heap[0][0] <= now:
                due = []
                while self._heap and self._heap[0][0] <= now:
                    at, _, player = heapq.heappop(self._heap)
                    if player.due == at:
                        player.due = None
                        due.append(player)
                return due
            self._cond.wait(self._heap[0][0] - now if self._heap else None)
        return None

    def _serve(self, player: Player, now: float) -> None:
        try:
            next_at = player.advance(now)
            flushed = player.flush(self._log_sent)
        except Exception:  # noqa: BLE001 - a bug in the emulator: end this stream, keep the others
            traceback.print_exc(file=sys.stderr)
            player.failed, flushed, next_at = True, True, None
        if player.failed or (flushed and next_at is None):
            self._end(player)
            return
        with self._cond:
            if not self._stopped:
                self._push(player, now + RETRY_SECONDS if not flushed else next_at or now)

    def _end(self, player: Player) -> None:
        with self._cond:
            watchers = self._watchers.get(player.source.record_id)
            if watchers is not None:
                watchers.discard(player)
                if not watchers:
                    del self._watchers[player.source.record_id]
        player.done.set()

    def _log_sent(self, record: list[Any], at: float) -> None:
        with self._log_lock:
            self._log.append([*record, at])

    def _cut_time(self, source: Source, probability: float) -> float | None:
        """When to cut this stream (cond held), or None."""
        first = source.peek()
        if first is None or probability <= 0 or self.rng.random() >= probability:
            return None
        return self.rng.uniform(first.at, max(first.at, source.events[-1].at))
