"""Scenario 3: instant runs (run time 0), 2 processes x 8 threads, a rising send rate until the
replies a second stop growing or the backlog runs away; then the SDK guide's blocking loop as
fast as it goes, and the same climb on the DBOS baseline (2 processes)."""

from __future__ import annotations

import time
from typing import Any

from bench.baseline import run_baseline
from bench.context import Context
from bench.load import Outbound, Sent, make_producer, send_paced
from bench.scenarios import dbos_side
from bench.scenarios.common import cpu_percent, polled
from bench.stack import running_emulator, running_stack
from bench.waits import BenchTimeout, Deadline

TIMEOUT = 420.0
RATES = (50, 100, 150, 200, 300, 400, 500)
SENDERS = 4  # sender threads: one alone falls behind on a busy 2-core machine
GROWTH = 0.05  # a step must add at least 5 % replies/s to go on
# A backlog above this many seconds of sends (and growing) stops the climb. DBOS's replies come
# 2 s or more after their sends even when it keeps up (its queue is polled every second, its runs
# after a 1 s sleep), so a 2 s allowance would stop it at its own latency rather than its capacity.
BACKLOG_SECONDS = 2.0
DBOS_BACKLOG_SECONDS = 5.0
SIDE_KEYS = ("peak_replies_per_s", "worker_cpu_percent", "store_cpu_percent", "worker_cpu_ms_per_reply",
             "store_cpu_ms_per_reply")


def run(ctx: Context) -> dict[str, Any]:
    deadline = Deadline(TIMEOUT, "the saturation scenario")
    step_seconds = 3.0 if ctx.quick else 10.0
    warmup = 1.0 if ctx.quick else 2.0  # the start of each step is left out of its window
    with running_stack(ctx.logs("worker"), run_seconds=0.0, processes=2, threads=8,
                       worker_env=polled()) as stack:
        result = _climb(stack, make_producer(stack.redis.url), step_seconds, warmup, deadline.sub(200, "the worker"))
    result.update({"run_seconds": 0.0, "worker_processes": 2, "worker_threads": 8, "step_seconds": step_seconds,
                   "window_start_s": warmup})
    if ctx.judged_only:  # a repetition: the worker's climb alone
        return result
    result["blocking_baseline"] = _blocking(ctx, deadline.sub(90, "the blocking baseline"))
    why = dbos_side.skipped()
    if why is not None:
        result["dbos"] = {"skipped": why}
        return result
    with dbos_side.checked_stack(ctx.logs("dbos"), run_seconds=0.0, processes=2) as dbos_stack:
        result["dbos"] = _climb(dbos_stack, dbos_stack.producer, step_seconds, warmup, deadline,
                                backlog_seconds=DBOS_BACKLOG_SECONDS)
        result["dbos"]["correctness"] = dbos_stack.correctness
    result["worker_vs_dbos"] = dbos_side.ratios(result, result["dbos"], SIDE_KEYS)
    return result


def _climb(stack: Any, producer: Any, step_seconds: float, warmup: float, deadline: Deadline,
           backlog_seconds: float = BACKLOG_SECONDS) -> dict[str, Any]:
    """The rising rates on one system (`stack`: bench.stack.Stack or a DbosStack): its steps,
    why it stopped, its peak step and the CPU there (store: Redis, plus PostgreSQL for DBOS)."""
    steps: list[dict[str, Any]] = []
    stop_reason = "all rates sent"
    outbound = Outbound(stack.redis.client)
    sent = Sent()
    for rate in RATES:
        deadline.check()
        stack.check_alive()
        steps.append(_step(stack, producer, outbound, sent, rate, step_seconds, warmup))
        stop = _stop(steps, rate, backlog_seconds)
        if stop is not None:
            stop_reason = stop
            break
    drained = _drain(outbound, len(sent), deadline)
    peak = max(steps, key=lambda s: s["replies_per_s"])
    return {"steps": steps, "stop_reason": stop_reason, "peak_replies_per_s": peak["replies_per_s"],
            "peak_step_rate": peak["target_rate"], "peak_cpu_percent": peak["cpu_percent"],
            "sent": len(sent), "replies": len(outbound.replies), "drained": drained, **_peak_cpu(peak)}


def _step(stack: Any, producer: Any, outbound: Outbound, sent: Sent, rate: int, step_seconds: float,
          warmup: float) -> dict[str, Any]:
    """One rate: its warm-up part, then the measured window with CPU marks around it."""
    step_start = time.time()
    first = len(sent)
    send_paced(producer, rate, warmup, _conversation, _text, sent, first, SENDERS)
    mark = stack.cpu_mark()
    window_start = time.time()
    send_paced(producer, rate, step_seconds - warmup, _conversation, _text, sent, len(sent), SENDERS)
    window_end = time.time()
    used = stack.cpu_mark().since(mark)
    outbound.read_new()
    in_window = sum(1 for r in outbound.replies if window_start <= r.published < window_end)
    window = window_end - window_start
    return {"target_rate": rate, "sent": len(sent) - first,
            "send_rate": round((len(sent) - first) / (window_end - step_start), 1),
            "replies_per_s": round(in_window / window, 1), "replies_in_window": in_window,
            "backlog_at_end": len(sent) - len(outbound.replies),
            "window_s": round(window, 2), "cpu_s": {k: round(v, 3) for k, v in used.items()},
            "cpu_percent": cpu_percent(used)}


def _blocking(ctx: Context, deadline: Deadline) -> dict[str, Any]:
    """The SDK guide's loop (bench.baseline) on 16 threads, the worker's 2 x 8, as fast as they go:
    replies/s and its CPU per message (it runs in this process, nothing else does meanwhile)."""
    with running_emulator(ctx.logs("blocking"), 0.0) as emulator:
        run_baseline(emulator.base_url, 8, 8, deadline)  # the SDK's first use is not its cost
        cpu_before = time.process_time()
        result = run_baseline(emulator.base_url, ctx.size(1000, 200), 16, deadline)
        result["cpu_ms_per_run"] = round(1000 * (time.process_time() - cpu_before) / result["messages"], 2)
    return result


def _stop(steps: list[dict[str, Any]], rate: int, backlog_seconds: float) -> str | None:
    """Why the climb stops after this step (None: it goes on)."""
    step, previous = steps[-1], (steps[-2] if len(steps) > 1 else None)
    if previous is not None and step["replies_per_s"] < (1 + GROWTH) * previous["replies_per_s"]:
        return f"replies/s grew less than {GROWTH:.0%} at {rate}/s"
    if step["backlog_at_end"] > max(backlog_seconds * rate, 200) and previous is not None \
            and step["backlog_at_end"] > previous["backlog_at_end"]:
        return f"the backlog grew without bound at {rate}/s"
    if step["send_rate"] < 0.9 * rate:
        return f"the load generator could not send {rate}/s"
    return None


def _peak_cpu(peak: dict[str, Any]) -> dict[str, float | None]:
    """At the peak step: the worker's and its store's CPU (% of one core, ms per reply)."""
    cpu, seconds, replies = peak["cpu_percent"], peak["cpu_s"], peak["replies_in_window"]
    store = seconds["redis"] + seconds.get("postgres", 0.0)
    return {"worker_cpu_percent": cpu["worker"], "store_cpu_percent": round(cpu["redis"] + cpu.get("postgres", 0.0), 1),
            "worker_cpu_ms_per_reply": round(1000 * seconds["worker"] / replies, 2) if replies else None,
            "store_cpu_ms_per_reply": round(1000 * store / replies, 2) if replies else None}


def _drain(outbound: Outbound, count: int, deadline: Deadline) -> bool:
    """Give the backlog a short while to clear (for the record; not a figure)."""
    try:
        outbound.wait_length(count, deadline.sub(20, "the backlog to drain"))
        return True
    except BenchTimeout:
        return False
    finally:
        outbound.read_new()


def _conversation(index: int) -> str:
    return f"sat-{index}"


def _text(index: int) -> str:
    return f"Hello {index}"
