"""Scenario 5: API calls, polls and detection lag per run for 1 s, 10 s and 60 s runs."""

from __future__ import annotations

from typing import Any

from bench.context import Context
from bench.load import Outbound, Sent, make_producer, send_paced
from bench.scenarios.common import api_calls, completed, outcome_counts, polled
from bench.stack import running_stack
from bench.stats import summary
from bench.waits import Deadline

TIMEOUT = 420.0
# run seconds -> (events a second, seconds of sending)
PLANS = {1.0: (10.0, 30.0), 10.0: (10.0, 30.0), 60.0: (5.0, 30.0)}
JUDGED_RUN_SECONDS = 10.0  # the row with targets


def run(ctx: Context) -> dict[str, Any]:
    deadline = Deadline(TIMEOUT, "the polling scenario")
    rows: dict[str, Any] = {}
    for run_seconds, (rate, planned_seconds) in PLANS.items():
        if ctx.judged_only and run_seconds != JUDGED_RUN_SECONDS:  # a repetition: the judged row alone
            continue
        seconds = planned_seconds / 5 if ctx.quick else planned_seconds
        rows[f"{run_seconds:g}s"] = _row(ctx, run_seconds, rate, seconds, deadline)
    return {"worker_processes": 1, "worker_threads": 8, "rows": rows}


def _row(ctx: Context, run_seconds: float, rate: float, seconds: float, deadline: Deadline) -> dict[str, Any]:
    name = f"{run_seconds:g}s"
    with running_stack(ctx.logs(name), run_seconds=run_seconds, processes=1, threads=8,
                       worker_env=polled()) as stack:
        outbound = Outbound(stack.redis.client)
        producer = make_producer(stack.redis.url)
        sent = Sent()
        stats_before = stack.emulator.stats()
        count = send_paced(producer, rate, seconds, lambda i: f"poll-{name}-{i}",
                           lambda i: f"Hello, message {i}.", sent)
        outbound.wait_length(count, deadline.sub(run_seconds * 1.3 + 60, f"{count} replies ({name} runs)"),
                             check=stack.check_alive)
        replies = outbound.read_new()
        stats = stack.emulator.stats()
        runs = stack.emulator.runs()
    done = completed(replies)
    ours = {reply.data.get("run_id") for reply in replies}
    lags = [r["last_polled_at"] - r["finished_at"] for r in runs if r["id"] in ours
            and r.get("last_polled_at") is not None and r.get("finished_at") is not None]
    return {"run_seconds": run_seconds, "rate": rate, "seconds": seconds, "sent": count,
            "replies": len(replies), "outcomes": outcome_counts(replies), "completed": done,
            "api": api_calls(stats_before, stats, done),
            "detection_lag_ms": summary(lags, qs=(50, 95, 99), scale=1000)}
