"""Scenario 4: steady 20 events/s for 60 s with 1 s runs; reply latency split into the worker's
processing overhead and the poll's detection lag, from the emulator's per-run times."""

from __future__ import annotations

from typing import Any

from bench.context import Context
from bench.load import Outbound, Sent, make_producer, send_paced
from bench.scenarios.common import completed, outcome_counts, polled
from bench.stack import running_stack
from bench.stats import summary
from bench.waits import Deadline

TIMEOUT = 200.0
RUN_SECONDS = 1.0
RATE = 20.0
ROTATION = 200  # conversations; one comes round again every 10 s, long after its reply


def run(ctx: Context) -> dict[str, Any]:
    deadline = Deadline(TIMEOUT, "the overhead scenario")
    seconds = 12.0 if ctx.quick else 60.0
    with running_stack(ctx.logs("worker"), run_seconds=RUN_SECONDS, processes=1, threads=8,
                       worker_env=polled()) as stack:
        outbound = Outbound(stack.redis.client)
        producer = make_producer(stack.redis.url)
        sent = Sent()
        count = send_paced(producer, RATE, seconds, lambda i: f"over-{i % ROTATION}",
                           lambda i: f"Hello, message {i}.", sent)
        outbound.wait_length(count, deadline.sub(60, f"{count} replies"), check=stack.check_alive)
        replies = outbound.read_new()
        runs = {run["id"]: run for run in stack.emulator.runs()}
    figures = split_latency(replies, sent, runs)
    return {"run_seconds": RUN_SECONDS, "rate": RATE, "seconds": seconds, "conversations": ROTATION,
            "worker_processes": 1, "worker_threads": 8, "sent": count, "replies": len(replies),
            "outcomes": outcome_counts(replies), "completed": completed(replies), **figures}


def split_latency(replies: list[Any], sent: Sent, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per reply: latency (timings.total_ms), processing overhead = (run created - send) +
    (publish - last poll), detection lag = last poll - run finished (emulated time)."""
    latency, processing, before_run, after_poll, detection, unmatched = [], [], [], [], [], 0
    for reply in replies:
        data = reply.data
        latency.append(data["timings"]["total_ms"] / 1000.0)
        run = runs.get(data.get("run_id") or "")
        event_ids = data.get("event_ids") or []
        sent_at = sent.at.get(event_ids[0]) if event_ids else None
        if run is None or sent_at is None or run.get("last_polled_at") is None or run.get("finished_at") is None:
            unmatched += 1
            continue
        start_part = run["created_at"] - sent_at
        end_part = reply.published - run["last_polled_at"]
        before_run.append(start_part)
        after_poll.append(end_part)
        processing.append(start_part + end_part)
        detection.append(run["last_polled_at"] - run["finished_at"])
    return {
        "latency_ms": summary(latency, scale=1000),
        "processing_ms": summary(processing, scale=1000),
        "send_to_run_created_ms": summary(before_run, scale=1000),
        "last_poll_to_publish_ms": summary(after_poll, scale=1000),
        "detection_lag_ms": summary(detection, scale=1000),
        "unmatched_replies": unmatched,
    }
