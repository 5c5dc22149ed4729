"""Scenario 1 (and 6, memory): 2,000 conversations at once, 10 s runs, one process x 8 threads;
then the SDK guide's baseline on the same emulator settings."""

from __future__ import annotations

from typing import Any

from bench import procs
from bench.baseline import run_baseline
from bench.context import Context
from bench.load import Outbound, Sampler, make_producer, send_burst
from bench.scenarios.common import completed, outcome_counts, polled
from bench.stack import running_emulator, running_stack
from bench.waits import Deadline

TIMEOUT = 420.0
RUN_SECONDS = 10.0
MB = 1024 * 1024


def run(ctx: Context) -> dict[str, Any]:
    deadline = Deadline(TIMEOUT, "the concurrency scenario")
    conversations = ctx.size(2000)
    result: dict[str, Any] = {"conversations": conversations, "run_seconds": RUN_SECONDS,
                              "worker_processes": 1, "worker_threads": 8}
    with running_stack(ctx.logs("worker"), run_seconds=RUN_SECONDS, processes=1, threads=8,
                       worker_env=polled()) as stack:
        client = stack.redis.client
        outbound = Outbound(client)
        producer = make_producer(stack.redis.url)
        worker_pids = stack.workers.worker_pids()
        memory_before = stack.redis.used_memory()

        def probe() -> dict[str, Any]:
            return {"in_flight": int(client.zcard("aw:schedule")),
                    "redis_used_memory": int(client.info("memory")["used_memory"]),
                    "worker_rss": [procs.rss_bytes(pid) or 0 for pid in worker_pids]}

        with Sampler(probe, 0.2) as sampler:
            sent = send_burst(producer, (f"conc-{i}" for i in range(conversations)),
                              lambda i: f"Hello, this is conversation {i}.")
            seen = outbound.wait_length(conversations, deadline.sub(180, f"{conversations} replies"),
                                        check=stack.check_alive)
        replies = outbound.read_new()

    last_publish = max(reply.published for reply in replies)
    wall = last_publish - sent.first
    samples = sampler.samples
    peak = max(samples, key=lambda s: s["in_flight"]) if samples else {"in_flight": 0}
    peak_in_flight = peak["in_flight"]
    max_rss = max((max(s["worker_rss"], default=0) for s in samples), default=0)
    result.update({
        "send_s": round(sent.last - sent.first, 2),
        "wall_s": round(wall, 2),
        "seen_after_last_publish_s": round(seen - last_publish, 2),
        "replies": len(replies), "outcomes": outcome_counts(replies), "completed": completed(replies),
        "replies_per_s": round(conversations / wall, 1),
        "peak_in_flight": peak_in_flight,
        "worker_rss_mb_at_peak": [round(b / MB, 1) for b in peak.get("worker_rss", [])],
        "worker_rss_mb_max": round(max_rss / MB, 1),
        "redis_used_memory_before": memory_before,
        "redis_used_memory_at_peak": peak.get("redis_used_memory"),
        "redis_bytes_per_in_flight_run": (round((peak["redis_used_memory"] - memory_before) / peak_in_flight)
                                          if peak_in_flight else None),
        "samples": [{"t": round(s["t"] - sent.first, 2), "in_flight": s["in_flight"],
                     "redis_used_memory": s["redis_used_memory"],
                     "worker_rss_mb": [round(b / MB, 1) for b in s["worker_rss"]]} for s in samples],
        "sampler_errors": sampler.errors[:5],
    })

    with running_emulator(ctx.logs("baseline"), RUN_SECONDS) as emulator:
        baseline = run_baseline(emulator.base_url, ctx.size(40, 8), 8,
                                deadline.sub(240, "the baseline's replies"))
        baseline["emulator_calls"] = emulator.stats().get("calls", {})
    result["baseline"] = baseline
    result["speedup_vs_baseline"] = round(result["replies_per_s"] / baseline["replies_per_s"], 1)
    return result

