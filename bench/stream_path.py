"""Where a streamed chunk's CPU goes on the stream loop, without the rest of the worker: N
event streams from a local server process (one text delta per stream every 100 ms, as in
the streaming scenario), read on uvloop by the worker's own StreamReader, their deltas
written by its BatchedWrites to a real Redis. A development tool for the streaming CPU
target, not a scenario:

    python -m bench.stream_path [--streams 200] [--seconds 8] [--repeat 3]

Each mode adds one layer to the one before, so the differences are the layers' costs:

- drain: the worker's HTTP client (worker/streams/client.py) reading the bodies, nothing else;
- parse: the StreamReader (SSE, translation, its writes' bookkeeping), writes answered at once;
- full: the writes sent to Redis through stream_writes.lua, as on the worker.

Prints the loop thread's CPU per chunk (median of the repeats, the modes interleaved, each
run in a fresh process) and writes the figures to bench-results/stream_path.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import uvloop

from bench import report
from bench.machine import cpu_speed
from bench.stack import RedisServer, free_port
from bench.waits import Deadline
from worker import keys
from worker.backends.base import RunState, StreamTarget
from worker.store.deltas import DeltaConfig
from worker.streams.client import HttpClient
from worker.streams.direct import DirectConnection
from worker.streams.events import AssistantsEvents
from worker.streams.reader import StreamReader, StreamSpec, TextDelta, Written
from worker.streams.writes import BatchedWrites

MODES = ("drain", "parse", "full")
INTERVAL = 0.1  # between a stream's chunks
SETTLE_SECONDS = 1.5  # after the streams open, before the measured window
ROOT = Path(__file__).resolve().parent.parent
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")


def _chunk() -> bytes:
    """One text delta event as the emulator frames it (one HTTP chunk)."""
    data = {"id": "msg_0123456789abcdefghij", "object": "thread.message.delta",
            "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "abcd", "annotations": []}}]}}
    event = b"event: thread.message.delta\ndata: " + json.dumps(data).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


async def _serve(port: int) -> None:
    chunk = _chunk()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")  # the request's body (small) came with its head
            writer.write(HEAD)
            while True:
                await asyncio.sleep(INTERVAL)
                writer.write(chunk)
        except (ConnectionError, RuntimeError, asyncio.IncompleteReadError):
            pass  # the client went away (a measured run's process exits with its streams open)
        finally:
            writer.close()

    server = await asyncio.start_server(stream, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


class _Sink:
    """The reader's writes, as Streams sends them; or answered at once (`parse`)."""

    def __init__(self, writes: BatchedWrites | None) -> None:
        self.writes = writes

    def send(self, target: StreamTarget, owner: str, cursor: str, deltas: list[TextDelta], done: Written) -> None:
        if self.writes is None:
            asyncio.get_running_loop().call_soon(done, len(deltas))
        else:
            self.writes.send(["d", target.batch_id, owner, target.conversation_id, cursor, deltas], done)

    async def store(self, target: StreamTarget, owner: str, document: str) -> int:
        return 1


def _targets(redis_url: str, streams: int) -> list[StreamTarget]:
    """Each stream's batch, its owner recorded and its run started (else nothing is written)."""
    client = redis.Redis.from_url(redis_url)
    targets = []
    for i in range(streams):
        target = StreamTarget(f"path-{i}", f"b{i}", [f"e{i}"])
        client.delete(keys.batch(target.conversation_id), DeltaConfig().prefix + target.conversation_id)
        client.hset(keys.batch(target.conversation_id),
                    mapping={"batch_id": target.batch_id, "stream_owner": f"p/{i}", "delta_run": "r"})
        targets.append(target)
    client.close()
    return targets


async def _measure(mode: str, port: int, redis_url: str, streams: int, seconds: float) -> dict[str, Any]:
    targets = _targets(redis_url, streams)
    writes = BatchedWrites(DirectConnection(redis_url), "p", DeltaConfig()) if mode == "full" else None
    tasks = [asyncio.get_running_loop().create_task(writes.run())] if writes is not None else []
    sink = _Sink(writes)
    client = HttpClient(f"http://127.0.0.1:{port}/v1/", {}, None, proxy=None, proxy_headers=None,
                        connect_timeout=10.0, read_timeout=60.0)

    async def follow(i: int) -> None:
        await asyncio.sleep(random.random() * INTERVAL)
        response = await client.request("POST", "threads/runs", b'{"stream":true}')
        if mode == "drain":  # each chunk read and dropped
            response.deliver(lambda chunk: None, lambda failure: None)
            return
        spec = StreamSpec(targets[i], f"p/{i}", AssistantsEvents.of_create(),
                          lambda run, _: RunState(id=str(run["id"]), status=str(run["status"])), time.time(), "r")
        reader = StreamReader(sink, spec)
        response.deliver(reader.feed, reader.ended)
        await reader.follow()

    tasks += [asyncio.get_running_loop().create_task(follow(i)) for i in range(streams)]
    await asyncio.sleep(SETTLE_SECONDS)
    before = time.thread_time()
    await asyncio.sleep(seconds)
    used = time.thread_time() - before
    chunks = streams * seconds / INTERVAL
    return {"mode": mode, "cpu_s": round(used, 4), "us_per_chunk": round(1e6 * used / chunks, 2)}


def _child(args: argparse.Namespace) -> None:
    async def measure_and_exit() -> None:
        result = await _measure(args.mode, args.port, args.redis, args.streams, args.seconds)
        print(json.dumps(result), flush=True)
        os._exit(0)  # from the loop, its streams and writer as they are: their teardown is not measured

    uvloop.run(measure_and_exit())


def _run_mode(mode: str, port: int, redis_url: str, args: argparse.Namespace) -> float:
    command = [sys.executable, "-m", "bench.stream_path", "--mode", mode, "--port", str(port), "--redis", redis_url,
               "--streams", str(args.streams), "--seconds", str(args.seconds)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 60, check=True, cwd=ROOT)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["us_per_chunk"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0, help="the measured window of each run (8)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "stream_path.json")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # a child's
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        _child(args)
        return
    if args.port is not None:  # the server's process
        uvloop.run(_serve(args.port))
        return
    figures = _run_all(args)
    print(f"host CPU speed {figures['speed'][0]} / {figures['speed'][1]} ms (lower is faster); "
          f"{args.streams} streams, a chunk each every {INTERVAL * 1000:.0f} ms")
    print(f"{'mode':8s} {'us/chunk (median)':>18s} {'its layer':>10s}   runs")
    previous = 0.0
    for mode in MODES:
        median = figures["median_us_per_chunk"][mode]
        print(f"{mode:8s} {median:18.1f} {median - previous:10.1f}   {figures['runs'][mode]}")
        previous = median
    report.write_json(args.out, figures)


def _run_all(args: argparse.Namespace) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="bench-stream-path-"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.stream_path", "--port", str(port)], cwd=ROOT)
    redis_server = RedisServer(logs)
    redis_server.start()
    runs: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        _wait_listening(port)
        speed_before = cpu_speed()
        for _ in range(args.repeat):
            for mode in MODES:
                runs[mode].append(_run_mode(mode, port, redis_server.url, args))
        speed_after = cpu_speed()
    finally:
        server.terminate()
        server.wait(10)
        redis_server.stop()
    return {"streams": args.streams, "seconds": args.seconds, "speed": [speed_before, speed_after], "runs": runs,
            "median_us_per_chunk": {mode: round(statistics.median(v), 2) for mode, v in runs.items()}}


def _wait_listening(port: int) -> None:
    deadline = Deadline(15, "the stream server to listen")
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            deadline.sleep(0.05)


if __name__ == "__main__":
    main()
