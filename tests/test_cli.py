"""The worker's command line: settings errors, assistant management, the Procfile's start."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from emulator import EmulatorConfig, EmulatorServer
from producers import Producer
from tests.conftest import free_port, wait_until
from tests.worker_process import worker_process
from worker.cli import merge_tools
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(run_seconds=0.2), port=0) as server:
        yield server


def _run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_a_bad_setting_fails_at_start_with_one_clear_line() -> None:
    done = _run("assistant", "tools", env={"WORKER_THREADS": "many"})
    assert done.returncode == 78
    assert done.stderr.strip().splitlines() == [
        ("assistant-worker: invalid setting WORKER_THREADS: "
         "Input should be a valid integer, unable to parse string as an integer")]


def test_assistant_create_and_push_tools_keep_hosted_tools(emulator: EmulatorServer) -> None:
    env = {"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-x",
           "WORKER_TOOL_MODULES": "tests.sample_tools"}
    created = _run("assistant", "create", env=env)
    assert created.returncode == 0, created.stderr
    assistant_id = created.stdout.strip()
    client = openai.OpenAI(base_url=emulator.base_url, api_key="sk-x")
    names = {t.function.name for t in client.beta.assistants.retrieve(assistant_id).tools}
    assert names == {"add", "big_output", "explode", "get_weather", "slow_lookup"}

    pushed = _run("assistant", "push-tools", "--assistant-id", "asst_default", env=env)
    assert pushed.returncode == 0, pushed.stderr
    tools = client.beta.assistants.retrieve("asst_default").tools
    assert [t.type for t in tools].count("code_interpreter") == 1
    assert {t.function.name for t in tools if t.type == "function"} == names


def test_merge_tools_replaces_same_named_functions() -> None:
    existing = [{"type": "file_search"},
                {"type": "function", "function": {"name": "add", "parameters": {}}},
                {"type": "function", "function": {"name": "theirs"}}]
    ours = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    merged = merge_tools(existing, ours)
    assert merged == [existing[0], existing[2], ours[0]]


def test_procfile_worker_line_processes_messages_and_serves_probes(
        emulator: EmulatorServer, redis_url: str, tmp_path: Path) -> None:
    """`assistant-worker run` (the Procfile's worker line) as a real process tree."""
    procfile = (ROOT / "Procfile").read_text()
    assert "worker: assistant-worker run" in procfile
    port = free_port()
    env = {"REDIS_URL": redis_url, "OPENAI_BASE_URL": emulator.base_url,
           "OPENAI_API_KEY": "sk-x", "ASSISTANT_ID": "asst_default", "METRICS_PORT": str(port),
           "WORKER_PROCESSES": "2", "WORKER_THREADS": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    with worker_process(env), Producer(Settings(redis_url=redis_url)) as producer:
        position = producer.outbound_position()
        event_id = producer.send_user_message("proc-1", "hello from a process")
        entry = producer.wait_for(event_id, position, timeout=30)
        assert entry is not None and entry["type"] == "run.completed"
        assert _get(port, "/healthz")[0] == 200
        assert _get(port, "/readyz")[0] == 200
        _, body = wait_until(lambda: _metric_ready(port), 10, what="runs metric")
        assert 'assistant_runs_total{status="completed"} 1.0' in body


def _metric_ready(port: int) -> tuple[int, str] | None:
    status, body = _get(port, "/metrics")
    return (status, body) if "assistant_runs_total{" in body else None


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


@pytest.mark.parametrize("backend", ["assistants", "responses"])
def test_make_demo_prints_the_reply_and_exits_0(backend: str) -> None:
    """The README's demo (what `make demo` runs once installed); one setting switches it
    to the Responses backend (`ASSISTANT_BACKEND=responses make demo`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ASSISTANT_"))}
    env["ASSISTANT_BACKEND"] = backend
    done = subprocess.run([sys.executable, "-m", "worker.demo"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "assistant: To solve 3x + 11 = 14" in done.stdout
    assert "x = 1" in done.stdout
