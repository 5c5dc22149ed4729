"""`python -m producers tail`: print outbound entries as they arrive, one JSON line each,
until Ctrl-C. With a group, through a ReplyReader (each entry acknowledged after it is
printed, gaps reported on stderr); without one, a plain XREAD from now (or the start)."""

from __future__ import annotations

import json
import os
import signal
import sys
import types
from typing import Any, Self

import redis

from producers.replies import Gap, Reply, ReplyReader, parse_entry
from worker.redis_client import make_redis, stream_entries
from worker.settings import Settings

# How long one read waits: also how soon Ctrl-C ends the loop when nothing arrives.
WAIT_MS = 500


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM end the loop once the entries in hand are printed (and
    acknowledged): a clean exit 0, never a traceback from the middle of a Redis call."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        self.requested = True


def tail(settings: Settings, group: str | None, consumer: str | None, from_start: bool,
         claim_idle_ms: int) -> int:
    try:
        with StopSignals() as stop:
            if group is None:
                _tail_stream(settings, from_start, stop)
            else:
                with ReplyReader(group, consumer, start="beginning" if from_start else "end",
                                 claim_idle_ms=claim_idle_ms, settings=settings) as reader:
                    _tail_group(reader, stop)
    except BrokenPipeError:
        # The reader of our output went away (`| head`): stop quietly; what was not
        # acknowledged is delivered again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (redis.ConnectionError, redis.TimeoutError):
        raise  # unreachable: one line and exit 69 (worker/commandline.py)
    except redis.RedisError as exc:
        print(f"redis: {exc}", file=sys.stderr)
        return 1
    return 0


def _tail_group(reader: ReplyReader, stop: StopSignals) -> None:
    reader.ensure_group()
    _status(f"reading {reader.stream} as {reader.consumer} in group {reader.group} (Ctrl-C to stop)")
    while not stop.requested:
        items = reader.read(count=100, block_ms=WAIT_MS)
        for item in items:
            if isinstance(item, Gap):
                print(f"gap: {item}", file=sys.stderr, flush=True)
            else:
                _print(item)
        reader.ack(items)


def _tail_stream(settings: Settings, from_start: bool, stop: StopSignals) -> None:
    client = make_redis(settings)
    stream = settings.outbound_stream
    try:
        newest = stream_entries(client.xrevrange(stream, count=1))
        position = "0-0" if from_start or not newest else newest[0][0]
        _status(f"reading {stream} from {'the start' if from_start else 'now'} (Ctrl-C to stop)")
        while not stop.requested:
            reply: Any = client.xread({stream: position}, count=100, block=WAIT_MS)
            for _, rows in reply or []:
                for entry_id, fields in stream_entries(rows):
                    _print(parse_entry(entry_id, fields))
                    position = entry_id
    finally:
        client.close()


def _print(reply: Reply) -> None:
    line: dict[str, Any] = {"id": reply.id, "data": reply.data}
    if reply.malformed:
        line["malformed"] = reply.malformed
    print(json.dumps(line), flush=True)


def _status(message: str) -> None:
    print(f"tail: {message}", file=sys.stderr, flush=True)
