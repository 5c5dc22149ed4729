"""Scenario 6: runs followed by their event streams (STREAMING=auto on a server that streams).

The flow: 10 s runs, about 100 text deltas per reply, 20 new conversations a second for 30 s
(about 200 runs in flight), one worker process x 8 threads, on the Assistants backend and
then on the Responses backend. Per run, from the emulator's stream log (the time each chunk
and each ending event was written) and the conversation's delta stream in Redis (an entry's
id is the millisecond Redis appended it):

- end lag: the run's terminal event sent -> its batch's `run.ended` entry in the delta stream
  (written with the outbound entry by the step that read the messages: an upper bound of
  the time the step after the end started);
- delta latency: the k-th chunk of a message sent -> the k-th `message.delta` entry of that
  message in Redis;
- polls per run: the worker's `assistant_run_polls_total` growth over the replies (and the
  emulator's getRun / getResponse calls, which also count Responses re-attaches);
- worker CPU per run, deltas included: the worker tree's CPU from the first send to the
  last reply, over the completed runs (as the cost scenario);
- every completed reply's messages checked against the concatenation of their deltas.

Then what the delta streams cost in Redis (MEMORY USAGE after a 100-delta reply, and of a
stream at its 1,000-entry cap), and the memory part: 2,000 slow streamed runs (300 s, long
replies) open at once in one worker process, its RSS read once `assistant_streams_open`
shows them all, or at the largest count within 150 s (then torn down).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import redis

from bench import procs
from bench.context import Context
from bench.load import Outbound, Reply, Sampler, Sent, make_producer, send_burst, send_paced
from bench.scenarios.common import api_calls, completed, outcome_counts
from bench.stack import Stack, free_port, running_stack
from bench.stats import summary
from bench.waits import Deadline

TIMEOUT = 420.0
RUN_SECONDS = 10.0
RATE = 20.0
SECONDS = 30.0
CHUNKS = 100  # the emulator's stream_chunks: text deltas per reply
BACKENDS = ("assistants", "responses")
JUDGED_BACKEND = "assistants"  # the targets are on its rows
MEMORY_STREAMS = 2000
MEMORY_RUN_SECONDS = 300.0  # long: every stream is still open when the last one opens
DELTA_PREFIX = "assistant:deltas:"
CAP = 1000  # DELTA_STREAM_MAXLEN's default
MB = 1024 * 1024
# About 400 characters: a reply of 100 deltas of 4 characters (a token or so each).
FILLER = ("The quick brown fox jumps over the lazy dog while the streaming benchmark counts every delta "
          "that the worker writes to the conversation's stream; ")
LONG_FILLER = FILLER * 14  # about 2,000 characters: 100 deltas of 20


def _message(index: int) -> str:
    return f"Conversation {index}: {FILLER * 2}{FILLER[:60]}"


def run(ctx: Context) -> dict[str, Any]:
    deadline = Deadline(TIMEOUT, "the streaming scenario")
    seconds = SECONDS / 5 if ctx.quick else SECONDS
    result: dict[str, Any] = {"run_seconds": RUN_SECONDS, "rate": RATE, "seconds": seconds, "chunks": CHUNKS,
                              "worker_processes": 1, "worker_threads": 8}
    for backend in BACKENDS:
        if ctx.judged_only and backend != JUDGED_BACKEND:  # a repetition: the judged flow alone
            continue
        result[backend] = _flow(ctx, backend, seconds, deadline)
    if ctx.judged_only:
        return result
    result["memory"] = _memory(ctx, ctx.size(MEMORY_STREAMS), deadline)
    return result


def _flow(ctx: Context, backend: str, seconds: float, deadline: Deadline) -> dict[str, Any]:
    with running_stack(ctx.logs(backend), run_seconds=RUN_SECONDS, processes=1, threads=8,
                       metrics_port=free_port(), worker_env={"ASSISTANT_BACKEND": backend},
                       emulator_config={"stream_chunks": CHUNKS}) as stack:
        client = stack.redis.client
        outbound = Outbound(client)
        producer = make_producer(stack.redis.url)
        sent = Sent()
        metrics_before, stats_before = stack.workers.metrics(), stack.emulator.stats()
        memory_before = stack.redis.used_memory()
        start = stack.cpu_mark()
        with Sampler(lambda: {"in_flight": int(client.zcard("aw:schedule"))}, 0.2) as sampler:
            count = send_paced(producer, RATE, seconds, lambda i: f"stream-{backend}-{i}", _message, sent)
            outbound.wait_length(count, deadline.sub(RUN_SECONDS * 1.3 + 60, f"{count} replies ({backend})"),
                                 check=stack.check_alive, interval=0.05)
        used = stack.cpu_mark().since(start)
        metrics, stats = stack.workers.metrics(), stack.emulator.stats()
        replies = outbound.read_new()
        memory_after = stack.redis.used_memory()
        conversations = sorted(set(sent.conversation.values()))
        finished = {r["id"]: r["finished_at"] for r in stack.emulator.runs() if r.get("finished_at") is not None}
        figures = per_run(replies, stack.emulator.admin("stream_log"), _delta_entries(client, conversations),
                          finished)
        figures["redis"] = _redis_memory(client, conversations, memory_after - memory_before)
    done = completed(replies)
    polls = _grew(metrics_before, metrics, "assistant_run_polls_total")
    return {"backend": backend, "sent": count, "replies": len(replies), "outcomes": outcome_counts(replies),
            "completed": done, "peak_in_flight": max((s["in_flight"] for s in sampler.samples), default=0),
            "polls_per_run": round(polls / done, 3) if done else None,
            "emulator_api": api_calls(stats_before, stats, done),
            "emulator_polls_per_run": _emulator_polls(stats_before, stats, done),
            "worker_cpu_ms_per_run": round(1000.0 * used["worker"] / done, 2) if done else None,
            "worker_dramatiq_processes_cpu_ms_per_run":
                round(1000.0 * used["worker_dramatiq_processes"] / done, 2) if done else None,
            "cpu_s": {k: round(v, 3) for k, v in used.items()},
            "ends_by_stream": _grew(metrics_before, metrics, 'assistant_run_ends_detected_total{by="stream"}'),
            "ends_by_poll": _grew(metrics_before, metrics, 'assistant_run_ends_detected_total{by="poll"}'),
            "worker_metrics": _stream_metrics(metrics_before, metrics), **figures}


def _grew(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def _stream_metrics(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The growth of the worker's streaming counters over the flow."""
    wanted = ("assistant_run_polls_total", "assistant_run_ends_detected_total", "assistant_stream_breaks_total",
              "assistant_stream_first_delta_seconds_sum", "assistant_stream_first_delta_seconds_count",
              "assistant_stream_events_total")
    return {key: round(value - before.get(key, 0.0), 3) for key, value in sorted(after.items())
            if key.split("{")[0] in wanted and value - before.get(key, 0.0)}


def _emulator_polls(before: dict[str, Any], after: dict[str, Any], runs: int) -> float | None:
    calls, earlier = after.get("calls", {}), before.get("calls", {})
    polls = sum(calls.get(op, 0) - earlier.get(op, 0) for op in ("getRun", "getResponse"))
    return round(polls / runs, 3) if runs else None


# ---- the delta streams, read back --------------------------------------------------------------


def _delta_entries(client: redis.Redis, conversations: list[str]) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """Each conversation's delta stream: (the time Redis appended the entry, its data), oldest first."""
    out: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for offset in range(0, len(conversations), 200):
        part = conversations[offset:offset + 200]
        pipe = client.pipeline(transaction=False)
        for cid in part:
            pipe.xrange(DELTA_PREFIX + cid)
        for cid, rows in zip(part, pipe.execute(), strict=True):
            out[cid] = [(int(raw.split(b"-")[0]) / 1000.0, json.loads(fields[b"data"])) for raw, fields in rows]
    return out


def _stream_log(log: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """From the emulator's stream log: when each run's (response's) ending event was written
    (the last, should it have had several streams) and, per message, when each chunk was."""
    endings: dict[str, float] = {}
    chunks: dict[str, dict[int, float]] = defaultdict(dict)
    for record in log:
        if record.get("index") is not None and record.get("item_id"):
            chunks[record["item_id"]][int(record["index"])] = record["at"]
        elif record["event"] not in ("cut", "thread.run.cancelling"):
            endings[record["id"]] = max(record["at"], endings.get(record["id"], 0.0))
    return endings, {item: [at for _, at in sorted(times.items())] for item, times in chunks.items()}


def per_run(replies: list[Reply], log: list[dict[str, Any]],
            streams: dict[str, list[tuple[float, dict[str, Any]]]],
            finished: dict[str, float] | None = None) -> dict[str, Any]:
    """End lags, delta latencies and the text check of every reply (see the module's docstring).
    A run whose stream did not carry its ending (the stream broke, the run was polled) has its
    end lag from the time the emulator finished it (`finished`: run id -> finished_at); only
    the messages streamed whole (as many entries as chunks) give delta latencies."""
    endings, chunks = _stream_log(log)
    end_lags: list[float] = []
    latencies: list[float] = []
    counts = dict.fromkeys(("unmatched_ends", "ends_not_streamed", "text_checked", "text_mismatches", "messages",
                            "messages_not_streamed_whole"), 0)
    for reply in replies:
        data = reply.data
        batch = [entry for entry in streams.get(data.get("conversation_id") or "", [])
                 if entry[1].get("event_ids") == data.get("event_ids")]
        ended = next((at for at, entry in batch if entry["type"] == "run.ended"), None)
        run_id = data.get("run_id") or ""
        end = endings.get(run_id)
        if end is None and (finished or {}).get(run_id) is not None:
            end = (finished or {})[run_id]
            counts["ends_not_streamed"] += 1
        if ended is None or end is None:
            counts["unmatched_ends"] += 1
        else:
            end_lags.append(ended - end)
        texts = _texts_since_started(batch)
        for message in data.get("messages") or []:
            counts["messages"] += 1
            entries, sent_at = texts.get(message["id"], []), chunks.get(message["id"], [])
            if len(entries) == len(sent_at):
                latencies.extend(at - chunk for (at, _), chunk in zip(entries, sent_at, strict=True))
            else:
                counts["messages_not_streamed_whole"] += 1
            if data.get("type") == "run.completed":
                counts["text_checked"] += 1
                counts["text_mismatches"] += "".join(text for _, text in entries) != (message.get("text") or "")
    return {"end_lag_ms": summary(end_lags, qs=(50, 95, 99), scale=1000),
            "delta_latency_ms": summary(latencies, qs=(50, 95, 99), scale=1000), **counts}


def _texts_since_started(batch: list[tuple[float, dict[str, Any]]]) -> dict[str, list[tuple[float, str]]]:
    """A batch's message.delta entries since its last run.started: message id -> [(time, text)]."""
    texts: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for at, entry in batch:
        if entry["type"] == "run.started":
            texts.clear()
        elif entry["type"] == "message.delta":
            texts[entry.get("message_id") or ""].append((at, entry.get("text") or ""))
    return texts


# ---- Redis memory ------------------------------------------------------------------------------


def _redis_memory(client: redis.Redis, conversations: list[str], grew: int) -> dict[str, Any]:
    """MEMORY USAGE of the delta streams (each after one 100-delta reply), of one at its cap,
    and used_memory's growth over the flow per conversation (what an idle conversation keeps:
    its delta stream, the outbound entry, the event ids remembered)."""
    pipe = client.pipeline(transaction=False)
    for cid in conversations:
        pipe.memory_usage(DELTA_PREFIX + cid, samples=0)
        pipe.xlen(DELTA_PREFIX + cid)
    values = pipe.execute()
    sizes = [int(v) for v in values[0::2] if v]
    lengths = [int(v) for v in values[1::2]]
    sample = next((fields[b"data"].decode() for _, fields in client.xrange(DELTA_PREFIX + conversations[0])
                   if b'"message.delta"' in fields[b"data"]), None) if conversations else None
    return {"sample_delta_entry": sample,"delta_stream_bytes": summary(sizes, qs=(50, 95), digits=0),
            "delta_stream_entries": summary(lengths, qs=(50,), digits=0),
            "delta_stream_bytes_mean": round(sum(sizes) / len(sizes)) if sizes else None,
            "used_memory_growth_per_conversation": round(grew / len(conversations)) if conversations else None,
            "at_cap": _at_cap(client, conversations[0]) if conversations else None}


def _at_cap(client: redis.Redis, cid: str) -> dict[str, Any]:
    """A scratch stream filled as the worker fills one (XADD MAXLEN ~ 1000) with this
    conversation's message.delta entries over and over, past the cap: its size there."""
    rows = [fields[b"data"] for _, fields in client.xrange(DELTA_PREFIX + cid)
            if b'"message.delta"' in fields[b"data"]]
    key = "bench:deltas-at-cap"
    pipe = client.pipeline(transaction=False)
    for number in range(CAP + 200):
        pipe.xadd(key, {"data": rows[number % len(rows)]}, maxlen=CAP, approximate=True)
    pipe.execute()
    usage, length = client.memory_usage(key, samples=0), client.xlen(key)
    client.delete(key)
    return {"entries": int(length), "bytes": int(usage or 0),
            "bytes_per_entry": round(int(usage or 0) / int(length)) if length else None}


# ---- the memory part: 2,000 streams open in one process -------------------------------------------


def _memory(ctx: Context, streams: int, deadline: Deadline) -> dict[str, Any]:
    with running_stack(ctx.logs("memory"), run_seconds=MEMORY_RUN_SECONDS, processes=1, threads=8,
                       metrics_port=free_port(), emulator_config={"stream_chunks": CHUNKS}) as stack:
        pids = stack.workers.worker_pids()
        rss_idle = [procs.rss_bytes(pid) or 0 for pid in pids]
        producer = make_producer(stack.redis.url)
        started = time.time()
        sent = send_burst(producer, (f"mem-{i}" for i in range(streams)), lambda i: f"{i} {LONG_FILLER}")
        # Until every stream is open, or (streams that fail close early) for a while at most:
        # the RSS is read at the largest count seen.
        peak = _wait_open(stack, pids, streams, deadline.sub(MEMORY_RUN_SECONDS * 0.5, f"{streams} streams"))
        breaks = {k: v for k, v in stack.workers.metrics().items() if k.startswith("assistant_stream_breaks_total")}
    rss = peak["rss"]
    return {"streams": streams, "run_seconds": MEMORY_RUN_SECONDS, "sent": len(sent),
            "send_s": round(sent.last - sent.first, 2), "all_open": peak["open"] >= streams,
            "streams_open": peak["open"], "streams_open_after_s": round(peak["t"] - started, 1),
            "worker_pids": pids, "worker_rss_mb_idle": [round(b / MB, 1) for b in rss_idle],
            "worker_rss_mb": [round(b / MB, 1) for b in rss], "worker_rss_mb_max": round(max(rss, default=0) / MB, 1),
            "worker_rss_mb_max_over_the_wait": round(peak["rss_max"] / MB, 1), "stream_breaks": breaks}


def _wait_open(stack: Stack, pids: list[int], streams: int, deadline: Deadline) -> dict[str, Any]:
    """Read the worker's assistant_streams_open until it reaches `streams` (or the deadline):
    the largest count seen, when, and the worker processes' RSS then."""
    peak: dict[str, Any] = {"open": -1, "t": time.time(), "rss": [], "rss_max": 0}
    while True:
        stack.check_alive()
        open_now = int(stack.workers.metrics().get("assistant_streams_open", 0))
        rss = [procs.rss_bytes(pid) or 0 for pid in pids]
        peak["rss_max"] = max(peak["rss_max"], *rss)
        if open_now > peak["open"]:
            peak.update({"open": open_now, "t": time.time(), "rss": rss})
        if open_now >= streams or deadline.expired():
            return peak
        time.sleep(0.5)
