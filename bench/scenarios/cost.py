"""Scenario 2: CPU and API calls per completed 10 s run, without tools and with one tool call."""

from __future__ import annotations

import time
from typing import Any

from bench.context import Context
from bench.load import Outbound, make_producer, send_burst
from bench.scenarios import dbos_side
from bench.scenarios.common import api_calls, completed, cpu_percent, outcome_counts, polled
from bench.stack import Stack, running_stack
from bench.waits import Deadline
from producers import Producer

TIMEOUT = 1200.0
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
        if ctx.judged_only and name != "no_tools":  # a repetition: the judged figure's variant alone
            continue
        result[name] = _variant(ctx, name, modules, text, warm_up, conversations, deadline)
    if ctx.judged_only:
        return result
    why = dbos_side.skipped()
    result["dbos"] = {"skipped": why} if why else {
        name: _dbos_variant(ctx, name, text, warm_up, conversations, deadline)
        for name, (_, text, warm_up) in VARIANTS.items()}
    if not why:
        result["worker_vs_dbos"] = {name: dbos_side.ratios(_side(result[name]), _side(result["dbos"][name]), SIDE_KEYS)
                                    for name in VARIANTS}
    return result


SIDE_KEYS = ("worker_cpu_ms_per_run", "store_cpu_ms_per_run", "total_cpu_ms_per_run", "calls_per_run")


def _side(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures compared: worker CPU, its store's (Redis; PostgreSQL + Redis for DBOS), both."""
    store = figures["redis_cpu_ms_per_run"] + (figures.get("postgres_cpu_ms_per_run") or 0.0)
    return {"worker_cpu_ms_per_run": figures["worker_cpu_ms_per_run"], "store_cpu_ms_per_run": round(store, 2),
            "total_cpu_ms_per_run": round(figures["worker_cpu_ms_per_run"] + store, 2),
            "calls_per_run": figures["api"]["calls_per_run"]}


def _dbos_variant(ctx: Context, name: str, text: Any, warm_up: str, conversations: int,
                  deadline: Deadline) -> dict[str, Any]:
    """The same burst on the DBOS baseline (1 process), after its correctness run and warm-up:
    it keeps no run history, so its first burst is its steady one."""
    with dbos_side.checked_stack(ctx.logs(f"dbos-{name}"), run_seconds=RUN_SECONDS, processes=1,
                                 warm_up=warm_up) as stack:
        # one process is CPU-bound at about 6 replies/s here: 1,000 runs take minutes
        figures = burst(stack, stack.producer, f"cost-dbos-{name}", text, conversations, deadline, wait=500)
        figures["correctness"] = stack.correctness
    return {**figures, **_side(figures)}


def _variant(ctx: Context, name: str, modules: str, text: Any, warm_up: str, conversations: int,
             deadline: Deadline) -> dict[str, Any]:
    """Two bursts on one worker: the first after its start (no run history: its poll planner
    backs off blindly until runs end), then the same again once it has seen such runs, as a
    worker that has been running for a while sees them (the figures at the top level); then
    a third on a restarted worker (new processes, the same Redis)."""
    with running_stack(ctx.logs(name), run_seconds=RUN_SECONDS, processes=1, threads=8,
                       tool_modules=modules, warm_up=warm_up, worker_env=polled()) as stack:
        producer = make_producer(stack.redis.url)
        idle: dict[str, Any] = {}
        if name == "no_tools" and not ctx.judged_only:  # what an idle worker costs, for scale
            idle_start = stack.cpu_mark()
            time.sleep(IDLE_SECONDS)
            idle["idle_cpu_percent"] = cpu_percent(stack.cpu_mark().since(idle_start))
        first = burst(stack, producer, f"cost-{name}-first", text, conversations, deadline)
        figures = burst(stack, producer, f"cost-{name}", text, conversations, deadline)
        if ctx.judged_only:
            return {**figures, "first_burst": first}
        # A new worker process on the same Redis: seeded with the run durations the first
        # one shared (aw:poll:phases), it should cost what a worker with history costs.
        stack.workers.restart(stack.redis.client)
        stack.warm_up(warm_up)  # imports and connections, as after the first start
        restarted = burst(stack, producer, f"cost-{name}-restarted", text, conversations, deadline)
    return {**idle, **figures, "first_burst": first, "restarted": restarted}


def burst(stack: Stack | Any, producer: Producer | Any, prefix: str, text: Any, conversations: int,
           deadline: Deadline, wait: float = 240) -> dict[str, Any]:
    outbound = Outbound(stack.redis.client)  # this burst's replies only
    stats_before = stack.emulator.stats()
    start = stack.cpu_mark()
    sent = send_burst(producer, (f"{prefix}-{i}" for i in range(conversations)), text)
    outbound.wait_length(conversations, deadline.sub(wait, f"{conversations} replies ({prefix})"),
                         check=stack.check_alive, interval=0.05)
    used = stack.cpu_mark().since(start)
    replies = outbound.read_new()
    stats = stack.emulator.stats()
    done = completed(replies)
    wall = max(r.published for r in replies) - sent.first

    def ms_per_run(seconds: float) -> float | None:
        return round(1000.0 * seconds / done, 2) if done else None

    figures = {
        "replies": len(replies), "outcomes": outcome_counts(replies), "completed": done,
        "wall_s": round(wall, 2), "window_s": round(used["wall"], 2),
        "cpu_s": {k: round(v, 3) for k, v in used.items()},
        "worker_cpu_ms_per_run": ms_per_run(used["worker"]),
        "worker_dramatiq_processes_cpu_ms_per_run": ms_per_run(used["worker_dramatiq_processes"]),
        "redis_cpu_ms_per_run": ms_per_run(used["redis"]),
        **({"postgres_cpu_ms_per_run": ms_per_run(used["postgres"])} if "postgres" in used else {}),
        "emulator_cpu_ms_per_run": ms_per_run(used["emulator"]),
        "bench_cpu_ms_per_run": ms_per_run(used["bench"]),
        "other_processes_cpu_ms_per_run": ms_per_run(used["others"]),
        "api": api_calls(stats_before, stats, done),
    }
    figures["tool_results_seen"] = sum(
        1 for r in replies for m in r.data.get("messages") or [] if "add -> 3" in (m.get("text") or ""))
    return figures
