"""Observability against real parts: a Prometheus server scrapes `assistant-worker run`
(two Dramatiq processes), the logs are the worker's real stderr, the alert rules go through
promtool."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from emulator import EmulatorConfig, EmulatorServer
from producers import Producer
from tests.conftest import free_port, wait_until
from tests.prometheus_server import PrometheusServer, binary
from tests.rules_manifest import ROOT, RULES
from tests.worker_process import worker_process
from worker import health
from worker.metrics import RUN_BUCKETS
from worker.settings import Settings

API_KEY = "sk-test-SECRET-5599"
SECRET_TEXT = "PINEAPPLE-7731"
CONVERSATIONS = 40
BUSY = "obs-busy"
MALFORMED = "obs-malformed"
TOOL_EVERY = 4  # every 4th conversation asks for get_weather
TOLERANCE = 0.25  # seconds between an entry's timings and the metric's observation
LIFECYCLE_FIELDS = {"conversation_id", "event_ids", "thread_id", "run_id"}


def histogram_quantile(q: float, values: list[float], buckets: tuple[float, ...]) -> float:
    """Prometheus's histogram_quantile over `values` observed into `buckets`."""
    rank, previous_bound, previous_count = q * len(values), 0.0, 0
    for bound in buckets:
        count = sum(1 for v in values if v <= bound)
        if count >= rank:
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return buckets[-1]


def runs_by_process(folder: Path) -> dict[str, float]:
    """Completed runs counted in each worker process's multiprocess file."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        total = 0.0
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _name, sample, labels, _help = json.loads(key)
            if sample == "assistant_runs_total" and labels.get("status") == "completed":
                total += value
        counts[path.stem] = total
    return counts


@pytest.fixture(scope="module")
def observed(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real worker (2 processes) scraped by Prometheus: 40 conversations (10 with a tool
    call), one conversation whose later messages wait behind its first run, one malformed
    event; the cluster gauges are read while the waiting happens."""
    redis_url = redis_server
    stack = contextlib.ExitStack()
    client = stack.enter_context(redis.Redis.from_url(redis_url))
    client.flushall()
    tmp_path = tmp_path_factory.mktemp("observability")
    metrics_dir = tmp_path / "multiproc"
    port = free_port()
    config = EmulatorConfig(run_seconds=0.6, jitter=0.3, poll_hint=False)
    with EmulatorServer(config, port=0) as emulator:
        env = {"REDIS_URL": redis_url, "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": API_KEY,
               "ASSISTANT_ID": "asst_default", "METRICS_PORT": str(port), "WORKER_PROCESSES": "2",
               "WORKER_THREADS": "4", "POLL_BATCH_SIZE": "1", "LOG_FORMAT": "json",
               "LOG_LEVEL": "INFO", "READY_CHECK_API": "true", "WORKER_TOOL_MODULES": "tests.sample_tools",
               "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        log_path = tmp_path / "worker.log"
        with worker_process(env, log_path), \
                PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{port}"]) as prometheus:
            # Both Dramatiq processes consume and beat before anything is sent.
            wait_until(lambda: client.zcard("dramatiq:__heartbeats__") >= 2
                       and len(_beats(metrics_dir)) == 2, 30, 0.1, what="two worker processes")
            wait_until(prometheus.targets_up, 30, 0.2, what="prometheus scraping the worker")
            settings = Settings(redis_url=redis_url)
            producer = stack.enter_context(Producer(settings))
            position = producer.outbound_position()
            # Busy: the first message's run takes 3 s; the next two wait behind it.
            producer.send_user_message(BUSY, "sleep:3 Take your time.")
            wait_until(lambda: client.hget(f"aw:batch:{BUSY}", "run_id"), 10, what="the busy run to start")
            producer.send_user_message(BUSY, "And a second question.")
            producer.send_user_message(BUSY, "And a third one.")
            busy_metrics = wait_until(lambda: _metric_line(port, 'assistant_events_waiting{conversation="busy"} 2.0'),
                                      10, 0.05, what="two events waiting behind a busy run")
            client.rpush(f"aw:inbox:{MALFORMED}", b"{not json")  # as a broken producer would
            client.zadd("aw:schedule", {MALFORMED: 0})
            for n in range(CONVERSATIONS):
                ask = 'call:get_weather{"city":"Oslo"} ' if n % TOOL_EVERY == 0 else ""
                producer.send_user_message(f"obs-{n}", f"{ask}Hello, my code word is {SECRET_TEXT}.")
            expected = CONVERSATIONS + 2 + 1  # the busy conversation answers in 2 runs
            entries = wait_until(lambda: _entries(client, settings.outbound_stream, position, expected),
                                 90, 0.2, what=f"{expected} replies")
            completed = CONVERSATIONS + 2
            wait_until(lambda: prometheus.scalar('sum(assistant_runs_total{status="completed"})') == completed
                       and prometheus.scalar("max(assistant_runs_active)") == 0,
                       20, 0.2, what="prometheus to see every run")
            results = {
                "entries": entries,
                "busy_metrics": busy_metrics,
                "p95_run": prometheus.scalar(
                    "histogram_quantile(0.95, sum by (le) (assistant_run_duration_seconds_bucket))"),
                "p50_reply": prometheus.scalar(
                    "histogram_quantile(0.5, sum by (le) "
                    '(assistant_reply_latency_seconds_bucket{outcome="completed"}))'),
                "completed": prometheus.scalar('sum(assistant_runs_total{status="completed"})'),
                "rejected": prometheus.scalar('sum(assistant_runs_total{status="rejected"})'),
                "tools_ok": prometheus.scalar('sum(assistant_tool_calls_total{tool="get_weather",outcome="ok"})'),
                "ends_detected": prometheus.scalar("sum(assistant_run_ends_detected_total)"),
                "api_ok": prometheus.scalar('sum(assistant_api_requests_total{outcome="ok"})'),
                "tokens": prometheus.scalar('sum(assistant_tokens_total{kind="completion"})'),
                "dramatiq": prometheus.scalar("sum(dramatiq_messages_total)"),
                "waiting": prometheus.query("max by (conversation) (assistant_events_waiting)"),
                "dead_letters": prometheus.scalar("max(assistant_dead_letters_added_total)"),
                "queue": prometheus.query("assistant_queue_messages"),
                "per_process": runs_by_process(metrics_dir),
                "beats": _beats(metrics_dir),
                "healthz": _get(port, "/healthz"),
                "metrics_text": _get(port, "/metrics")[1],
                "readyz": _get(port, "/readyz"),
            }
    stack.close()
    results["log"] = log_path.read_text()
    return results


def _beats(folder: Path) -> list[dict[str, Any]]:
    beats = []
    for path in health.heartbeat_files(folder):
        try:
            beats.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return beats


def _metric_line(port: int, line: str) -> str | None:
    status, body = _get(port, "/metrics")
    return body if status == 200 and line in body.splitlines() else None


def _entries(client: redis.Redis, stream: str, position: str, count: int) -> list[dict[str, Any]] | None:
    raw = client.xrange(stream, min=f"({position}" if position != "0" else "-")
    entries = [json.loads(fields[b"data"]) for _, fields in raw]
    return entries if len(entries) >= count else None


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_prometheus_sees_the_runs_of_every_worker_process(observed: dict[str, Any]) -> None:
    entries = [e for e in observed["entries"] if e["conversation_id"].startswith("obs-")
               and e["conversation_id"] not in (BUSY, MALFORMED)]
    assert [e["type"] for e in entries] == ["run.completed"] * CONVERSATIONS
    assert observed["completed"] == CONVERSATIONS + 2 and observed["rejected"] == 1
    # The run-duration histogram as Prometheus computes its p95, against the same p95
    # computed from the replies' own run_ms (the metric is taken just after the entry).
    ran = [e for e in observed["entries"] if e["type"] == "run.completed"]
    run_seconds = [e["timings"]["run_ms"] / 1000 for e in ran]
    low = histogram_quantile(0.95, run_seconds, RUN_BUCKETS)
    high = histogram_quantile(0.95, [s + TOLERANCE for s in run_seconds], RUN_BUCKETS)
    assert low - 1e-9 <= observed["p95_run"] <= high + 1e-9, (observed["p95_run"], low, high)
    # Reply latency is observed once per event: the busy conversation's second entry
    # answers two events (their sends were a few ms apart; total_ms times the older one).
    replies = [e["timings"]["total_ms"] / 1000 for e in ran for _ in e["event_ids"]]
    low = histogram_quantile(0.5, replies, RUN_BUCKETS)
    high = histogram_quantile(0.5, [s + TOLERANCE for s in replies], RUN_BUCKETS)
    assert low - 1e-9 <= observed["p50_reply"] <= high + 1e-9
    assert observed["tools_ok"] == CONVERSATIONS // TOOL_EVERY
    assert observed["ends_detected"] >= CONVERSATIONS  # by their streams or by polls
    # The run (its thread with it) at least; a streamed run's messages come with its stream.
    assert observed["api_ok"] >= CONVERSATIONS
    assert observed["tokens"] and observed["tokens"] > 0
    assert observed["dramatiq"] and observed["dramatiq"] >= CONVERSATIONS  # Dramatiq's own metrics
    # Several processes did the work, and Prometheus got their sum.
    per_process = observed["per_process"]
    assert sum(1 for count in per_process.values() if count > 0) >= 2, per_process
    assert sum(per_process.values()) == CONVERSATIONS + 2


def test_cluster_gauges_come_from_redis(observed: dict[str, Any]) -> None:
    busy = observed["busy_metrics"].splitlines()
    active = [line for line in busy if line.startswith("assistant_runs_active ")]
    assert active and float(active[0].split()[1]) >= 1  # the busy conversation, at least
    assert 'assistant_events_waiting{conversation="idle"} 0.0' in busy
    assert any(line.startswith('assistant_queue_messages{queue="assistant"} ') for line in busy)
    # At the end: nothing waits, the one malformed event is a dead letter.
    assert {r["metric"]["conversation"]: float(r["value"][1]) for r in observed["waiting"]} == {
        "busy": 0.0, "idle": 0.0}
    assert observed["dead_letters"] == 1
    assert [q["metric"]["queue"] for q in observed["queue"]] == ["assistant"]


def test_probes_answer_on_the_metrics_port(observed: dict[str, Any]) -> None:
    beats = observed["beats"]  # the two worker processes' heartbeats, their schedulers turning
    assert len(beats) == 2 and all(b["scheduler_at"] is not None for b in beats), beats
    assert observed["healthz"] == (200, "ok\n")
    status, body = observed["readyz"]  # Redis and the API (READY_CHECK_API=true)
    assert status == 200 and body.splitlines()[0] == "ok"
    assert "capability: additional_messages=yes (assumed)" in body.splitlines()  # nothing learnt here


def test_logs_are_json_lifecycle_events_without_secrets_or_message_text(observed: dict[str, Any]) -> None:
    log = observed["log"]
    assert API_KEY not in log and SECRET_TEXT not in log
    records = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_event.setdefault(record["event"], []).append(record)
    for event in ("run created", "published", "tool called", "tool outputs submitted"):
        assert by_event.get(event), f"no {event!r} event in the log"
        for record in by_event[event]:
            assert record.keys() >= LIFECYCLE_FIELDS, record
            assert record["level"] == "info" and "timestamp" in record
    assert len(by_event["published"]) == CONVERSATIONS + 2
    assert all(isinstance(r["run_ms"], int) and isinstance(r["total_ms"], int) for r in by_event["published"])
    assert all("duration_ms" in r for r in by_event["tool called"])
    assert all("code" in r for r in by_event["published"])  # null for run.completed
    (rejected,) = by_event["event rejected"]  # the malformed event, with why
    assert rejected["level"] == "warning" and rejected["conversation_id"] == MALFORMED and rejected["reason"]
    # Dramatiq's own records go through the same JSON pipeline.
    assert any(r.get("logger", "").startswith("dramatiq") for r in records), sorted(by_event)


# --- alert rules and dashboard ------------------------------------------------------------

DASHBOARD = ROOT / "deploy" / "grafana" / "assistant-worker.json"
METRIC_NAME = r"\b((?:assistant|dramatiq)_[a-z_]+)\b(?!-)"


def test_promtool_checks_the_rules_and_passes_their_unit_tests() -> None:
    check = subprocess.run([binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([binary("promtool"), "test", "rules", "alerts_test.yaml"], cwd=RULES.parent,
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr


def test_the_dashboard_and_rules_only_use_metrics_the_worker_exports(observed: dict[str, Any]) -> None:
    families = list(text_string_to_metric_families(observed["metrics_text"]))
    exported = {f.name for f in families} | {sample.name for f in families for sample in f.samples}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(METRIC_NAME, expr)}
    assert used and used <= exported, used - exported
    used_in_rules = set(re.findall(METRIC_NAME, RULES.read_text()))
    assert used_in_rules and used_in_rules <= exported, used_in_rules - exported


def test_every_metric_the_worker_exports_is_explained_in_the_docs(observed: dict[str, Any]) -> None:
    readme = (ROOT / "docs" / "operations.md").read_text()  # the metrics table (the README links it)
    families = {family.name for family in text_string_to_metric_families(observed["metrics_text"])
                if family.name.startswith("assistant_")}
    assert len(families) >= 13
    missing = [name for name in families if f"`{name}`" not in readme and f"`{name}_total`" not in readme]
    assert missing == []
