"""Every metric of contract section 7, declared in one place.

prometheus-client chooses single- or multi-process mode when first imported, so the
`assistant-worker run` command sets PROMETHEUS_MULTIPROC_DIR before any worker imports this.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
