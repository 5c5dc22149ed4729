"""Every metric of contract section 7, declared in one place.

prometheus-client chooses single- or multi-process mode when first imported, so the
`assistant-worker run` command sets PROMETHEUS_MULTIPROC_DIR before any worker imports this.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from worker import keys

# LLM runs take from under a second to several minutes.
RUN_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

RUN_DURATION = Histogram("assistant_run_duration_seconds",
                         "Run start to terminal state, per batch.", ["status"], buckets=RUN_BUCKETS)
REPLY_LATENCY = Histogram("assistant_reply_latency_seconds",
                          "Send to publish, once per inbound event.", ["outcome"], buckets=RUN_BUCKETS)
RUNS = Counter("assistant_runs", "Batches finished, by outbound status.", ["status"])
TOOL_CALLS = Counter("assistant_tool_calls", "Function tool calls executed.", ["tool", "outcome"])
TOOL_DURATION = Histogram("assistant_tool_call_duration_seconds", "Duration of a tool call.",
                          ["tool"], buckets=TOOL_BUCKETS)
API_REQUESTS = Counter("assistant_api_requests", "Requests to the assistant API.",
                       ["operation", "outcome"])
RUN_POLLS = Counter("assistant_run_polls", "Polls of a run's status.")
TOKENS = Counter("assistant_tokens", "Tokens used by runs.", ["kind"])
# 1 while a worker process's API circuit is open (worker/circuit.py). "livemax": the pod's
# value is the highest of its live processes (a stopping process sets its own to 0).
API_CIRCUIT_OPEN = Gauge("assistant_api_circuit_open",
                         "1 while the API circuit breaker is open (steps wait, one probe at a time).",
                         multiprocess_mode="livemax")


def observe_circuit(is_open: bool) -> None:
    API_CIRCUIT_OPEN.set(1 if is_open else 0)


DUPLICATE_ITEMS_LEFT = Counter("assistant_duplicate_items_left",
                               "Conversation items of a late second copy of a batch that could not be deleted.")


def observe_api(operation: str, outcome: str) -> None:
    API_REQUESTS.labels(operation=operation, outcome=outcome).inc()


def observe_outcome(kind: str, run_seconds: float | None, latencies: list[float],
                    usage: dict[str, int] | None) -> None:
    status = kind.split(".", 1)[1]
    RUNS.labels(status=status).inc()
    if run_seconds is not None:
        RUN_DURATION.labels(status=status).observe(run_seconds)
    for latency in latencies:
        REPLY_LATENCY.labels(outcome=status).observe(latency)
    for kind_ in ("prompt", "completion"):
        value = (usage or {}).get(f"{kind_}_tokens")
        if value:
            TOKENS.labels(kind=kind_).inc(value)


def observe_tool(tool: str, outcome: str, seconds: float) -> None:
    TOOL_CALLS.labels(tool=tool, outcome=outcome).inc()
    TOOL_DURATION.labels(tool=tool).observe(seconds)


# KEYS: schedule, dead letters. ARGV: now, batch key prefix, inbox key prefix. One pass over
# the schedule (every conversation with work is on it): events waiting in inboxes of busy
# conversations (a batch open) and of idle ones, how late the most overdue step is, and the
# dead-letter stream's count of entries ever added (it is capped; requeue deletes entries).
_CLUSTER = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local busy, idle = 0, 0
for _, cid in ipairs(members) do
  local waiting = redis.call('LLEN', ARGV[3] .. cid)
  if waiting > 0 then
    if redis.call('EXISTS', ARGV[2] .. cid) == 1 then busy = busy + waiting else idle = idle + waiting end
  end
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local lag = 0
if oldest[2] then lag = math.max(0, tonumber(ARGV[1]) - tonumber(oldest[2])) end
local added = 0
if redis.call('EXISTS', KEYS[2]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
end
return {#members, busy, idle, tostring(lag), added}
"""


class ClusterCollector(Collector):
    """Cluster-wide figures, read from Redis at scrape time: every pod exports the same
    values, so dashboards take max() over pods, not sum(). One Lua pass over the schedule
    (a few ms for 10,000 conversations in flight)."""

    def __init__(self, client: redis.Redis, queues: list[str]) -> None:
        self.client = client
        self.queues = queues
        self._script = client.register_script(_CLUSTER)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            active, busy, idle, lag, added = self._script(
                keys=[keys.SCHEDULE, keys.DEAD_LETTERS],
                args=[time.time(), keys.batch(""), keys.inbox("")])
            pipe = self.client.pipeline(transaction=False)
            for queue in self.queues:
                pipe.llen(keys.dramatiq_queue(queue))
                pipe.llen(keys.dramatiq_queue(queue + ".DQ"))
            lengths = pipe.execute()
        except redis.exceptions.RedisError:
            return  # the process's own metrics still go out; /readyz reports Redis
        yield GaugeMetricFamily("assistant_runs_active",
                                "Conversations with a run in flight or about to start (cluster-wide).",
                                value=active)
        yield GaugeMetricFamily("assistant_schedule_lag_seconds",
                                "How late the most overdue conversation step is (cluster-wide); "
                                "grows when no worker makes progress.", value=float(lag))
        waiting = GaugeMetricFamily("assistant_events_waiting",
                                    "Events accepted but not yet in a run (cluster-wide), by whether "
                                    "their conversation is busy with a run.", labels=["conversation"])
        waiting.add_metric(["busy"], busy)
        waiting.add_metric(["idle"], idle)
        yield waiting
        yield CounterMetricFamily("assistant_dead_letters_added",
                                  "Entries ever added to the dead-letter stream (cluster-wide).",
                                  value=added)
        queued = GaugeMetricFamily("assistant_queue_messages",
                                   "Dramatiq messages waiting in a queue (cluster-wide).",
                                   labels=["queue"])
        for queue, now, delayed in zip(self.queues, lengths[0::2], lengths[1::2], strict=True):
            queued.add_metric([queue], now + delayed)
        yield queued


# Runs followed by their event stream (worker/streams/).
STREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)
STREAM_FIRST_DELTA = Histogram("assistant_stream_first_delta_seconds",
                               "A streamed run's start to its first delta written.", buckets=STREAM_BUCKETS)
# "livesum": the pod's streams are those of its live processes.
STREAMS_OPEN = Gauge("assistant_streams_open", "Run streams open now.", multiprocess_mode="livesum")
STREAM_EVENTS = Counter("assistant_stream_events", "Events read from run streams (progress, for AssistantNoProgress).")
STREAM_BREAKS = Counter("assistant_stream_breaks", "Streams that broke before their run's end, by what followed.",
                        ["outcome"])
RUN_ENDS_DETECTED = Counter("assistant_run_ends_detected",
                            "Run phases seen to need the worker (tool calls, an ending), by how.", ["by"])
