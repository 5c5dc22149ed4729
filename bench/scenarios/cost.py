"""Scenario 2: CPU and API calls per completed 10 s run, without tools and with one tool call."""

from __future__ import annotations

import time
from typing import Any

from bench.context import Context
from bench.load import Outbound, make_producer, send_burst
from bench.scenarios.common import api_calls, completed, cpu_percent, outcome_counts
from bench.stack import running_stack
from bench.waits import Deadline

TIMEOUT = 300.0
RUN_SECONDS = 10.0
IDLE_SECONDS = 3.0
TOOL_CALL = 'call:add{"a": 1, "b": 2}'
# name -> (WORKER_TOOL_MODULES, the message of conversation i, the warm-up message)
VARIANTS = {
    "no_tools": ("", lambda i: f"Hello, this is conversation {i}.", "warm-up sleep:0.05"),
    "one_tool": ("bench.tools", lambda i: TOOL_CALL, TOOL_CALL + " sleep:0.05"),
}


def run(ctx: Context) -> dict[str, Any]:
    deadline = Deadline(TIMEOUT, "the cost scenario")
    conversations = ctx.size(1000)
    result: dict[str, Any] = {"conversations": conversations, "run_seconds": RUN_SECONDS,
                              "worker_processes": 1, "worker_threads": 8}
    for name, (modules, text, warm_up) in VARIANTS.items():
        result[name] = _variant(ctx, name, modules, text, warm_up, conversations, deadline)
    return result


def _variant(ctx: Context, name: str, modules: str, text: Any, warm_up: str, conversations: int,
             deadline: Deadline) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with running_stack(ctx.logs(name), run_seconds=RUN_SECONDS, processes=1, threads=8,
                       tool_modules=modules, warm_up=warm_up) as stack:
        outbound = Outbound(stack.redis.client)
        producer = make_producer(stack.redis.url)
        if name == "no_tools":  # what an idle worker costs, for scale
            idle_start = stack.cpu_mark()
            time.sleep(IDLE_SECONDS)
            figures["idle_cpu_percent"] = cpu_percent(stack.cpu_mark().since(idle_start))
        stats_before = stack.emulator.stats()
        start = stack.cpu_mark()
        sent = send_burst(producer, (f"cost-{name}-{i}" for i in range(conversations)), text)
        outbound.wait_length(conversations, deadline.sub(150, f"{conversations} replies ({name})"),
                             check=stack.check_alive, interval=0.05)
        used = stack.cpu_mark().since(start)
        replies = outbound.read_new()
        stats = stack.emulator.stats()
    done = completed(replies)
    wall = max(r.published for r in replies) - sent.first

    def ms_per_run(seconds: float) -> float | None:
        return round(1000.0 * seconds / done, 2) if done else None

    figures.update({
        "replies": len(replies), "outcomes": outcome_counts(replies), "completed": done,
        "wall_s": round(wall, 2), "window_s": round(used["wall"], 2),
        "cpu_s": {k: round(v, 3) for k, v in used.items()},
        "worker_cpu_ms_per_run": ms_per_run(used["worker"]),
        "worker_dramatiq_processes_cpu_ms_per_run": ms_per_run(used["worker_dramatiq_processes"]),
        "redis_cpu_ms_per_run": ms_per_run(used["redis"]),
        "emulator_cpu_ms_per_run": ms_per_run(used["emulator"]),
        "bench_cpu_ms_per_run": ms_per_run(used["bench"]),
        "other_processes_cpu_ms_per_run": ms_per_run(used["others"]),
        "api": api_calls(stats_before, stats, done),
    })
    if name == "one_tool":
        figures["tool_results_seen"] = sum(
            1 for r in replies for m in r.data.get("messages") or [] if "add -> 3" in (m.get("text") or ""))
    return figures
