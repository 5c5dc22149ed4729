"""Scenario 8: a cold first burst, what a deploy or a scale-out meets. A worker just started
(its start-up CPU settled, no run history), one process x 8 threads, is handed 500 new
conversations at once, each a 2 s run with no tools; worker CPU from the first send to the
last reply, over the replies. Once with STREAMING=off (runs polled), once with auto (the
emulator streams, so runs are followed by their streams)."""

from __future__ import annotations

import time
from typing import Any

from bench.context import Context
from bench.load import make_producer
from bench.scenarios.common import cpu_percent
from bench.scenarios.cost import burst
from bench.stack import Stack, running_stack
from bench.waits import Deadline

TIMEOUT = 600.0
RUN_SECONDS = 2.0
CONVERSATIONS = 500
VARIANTS = {"streaming_off": "off", "streaming_auto": "auto"}
SETTLED_PERCENT = 5.0  # the worker's CPU over a second, in % of a core, below which start-up is over
SETTLE_SECONDS = 20.0


def run(ctx: Context) -> dict[str, Any]:
    deadline = Deadline(TIMEOUT, "the cold-burst scenario")
    conversations = ctx.size(CONVERSATIONS)
    result: dict[str, Any] = {"conversations": conversations, "run_seconds": RUN_SECONDS,
                              "worker_processes": 1, "worker_threads": 8}
    for name, streaming in VARIANTS.items():
        with running_stack(ctx.logs(name), run_seconds=RUN_SECONDS, processes=1, threads=8,
                           worker_env={"STREAMING": streaming}) as stack:
            settled = _settle(stack)
            figures = burst(stack, make_producer(stack.redis.url), f"cold-{name}",
                             lambda i: f"Hello, this is conversation {i}.", conversations, deadline, wait=180)
            result[name] = {**figures, "settled_after_s": settled}
    return result


def _settle(stack: Stack) -> float:
    """Wait until the worker's CPU over a second falls below SETTLED_PERCENT of a core (its
    start-up is over); how long that took (at most SETTLE_SECONDS)."""
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_SECONDS:
        mark = stack.cpu_mark()
        time.sleep(1.0)
        if cpu_percent(stack.cpu_mark().since(mark))["worker"] < SETTLED_PERCENT:
            break
    return round(time.monotonic() - started, 1)
