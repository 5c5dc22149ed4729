"""/healthz's reading of the worker processes' heartbeat files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from emulator import EmulatorConfig, EmulatorServer
from tests.conftest import free_port, wait_until
from worker import health
from worker.http import ApiCheck
from worker.settings import Settings

LIMIT = 300.0


def beat(folder: Path, pid: int, *, at: float, scheduler_at: float | None, busy_since: float | None,
         started_at: float | None = None) -> Path:
    path = health.heartbeat_path(folder, pid)
    path.write_text(json.dumps({"pid": pid, "at": at, "started_at": started_at or at,
                                "scheduler_at": scheduler_at, "busy_since": busy_since}))
    return path


def test_a_fresh_heartbeat_is_healthy(tmp_path: Path) -> None:
    now = time.time()
    beat(tmp_path, os.getpid(), at=now - 1, scheduler_at=now - 1, busy_since=now - 20)
    assert health.check(tmp_path, LIMIT, now) == []


def test_a_silent_process_a_stuck_scheduler_and_a_wedged_thread_are_reported(tmp_path: Path) -> None:
    now = time.time()
    pid = os.getpid()
    beat(tmp_path, pid, at=now - 31, scheduler_at=now - 1, busy_since=None)
    assert health.check(tmp_path, LIMIT, now) == [f"worker process {pid}: no heartbeat for 31 s"]
    beat(tmp_path, pid, at=now, scheduler_at=now - 45, busy_since=None)
    assert health.check(tmp_path, LIMIT, now) == [f"worker process {pid}: scheduler stuck for 45 s"]
    beat(tmp_path, pid, at=now, scheduler_at=now, busy_since=now - 301)
    assert health.check(tmp_path, LIMIT, now) == [
        f"worker process {pid}: a thread busy on one step for 301 s"]


def test_a_scheduler_that_never_started_is_reported_after_a_grace_time(tmp_path: Path) -> None:
    now = time.time()
    pid = os.getpid()
    beat(tmp_path, pid, at=now, scheduler_at=None, busy_since=None, started_at=now - 5)
    assert health.check(tmp_path, LIMIT, now) == []
    beat(tmp_path, pid, at=now, scheduler_at=None, busy_since=None, started_at=now - 40)
    assert health.check(tmp_path, LIMIT, now) == [f"worker process {pid}: its scheduler never started"]


def test_the_middleware_writes_the_heartbeat_and_removes_it_at_shutdown(tmp_path: Path) -> None:
    ticks = [time.time()]
    middleware = health.HealthMiddleware(str(tmp_path), lambda: ticks[-1])
    middleware.after_worker_boot(None, None)  # type: ignore[arg-type]  # it uses neither broker nor worker
    middleware.before_process_message(None, None)  # type: ignore[arg-type]  # this thread is on a step
    path = health.heartbeat_path(tmp_path, os.getpid())
    try:
        written = wait_until(lambda: path.exists() and json.loads(path.read_text()), 5, what="a heartbeat")
        assert written["pid"] == os.getpid() and written["scheduler_at"] == ticks[-1]
        wait_until(lambda: json.loads(path.read_text())["busy_since"] is not None, 5, what="a busy thread")
        middleware.after_process_message(None, None)  # type: ignore[arg-type]  # nor the message
        wait_until(lambda: json.loads(path.read_text())["busy_since"] is None, 5, what="the step to end")
    finally:
        middleware.before_worker_shutdown(None, None)  # type: ignore[arg-type]  # as after_worker_boot
    assert not path.exists()


def test_the_heartbeat_carries_the_api_circuit_state_for_readyz(tmp_path: Path) -> None:
    state = {"open_since": time.time(), "last_error": "runs.retrieve: timeout", "last_ok_at": None, "refused": None}
    middleware = health.HealthMiddleware(str(tmp_path), time.time, lambda: state)
    middleware.after_worker_boot(None, None)  # type: ignore[arg-type]  # it uses neither broker nor worker
    try:
        assert wait_until(lambda: health.api_states(tmp_path), 5, what="a heartbeat") == [state]
    finally:
        middleware.before_worker_shutdown(None, None)  # type: ignore[arg-type]  # as after_worker_boot
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = beat(tmp_path, gone.pid, at=time.time(), scheduler_at=None, busy_since=None)
    path.write_text(json.dumps(json.loads(path.read_text()) | {"api": state}))
    (tmp_path / f"{health.PREFIX}broken.json").write_text("{half a")
    assert health.api_states(tmp_path) == [], "a process that is gone says nothing"


def test_the_file_of_a_process_that_is_gone_is_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = beat(tmp_path, gone.pid, at=0.0, scheduler_at=0.0, busy_since=0.0)
    assert health.check(tmp_path, LIMIT) == []
    assert not path.exists()


def test_the_readiness_check_of_the_api_says_what_is_wrong() -> None:
    with EmulatorServer(EmulatorConfig(), port=0) as emulator:
        assert ApiCheck(Settings(openai_base_url=emulator.base_url, openai_api_key="sk-x")).problem() is None
        assert ApiCheck(Settings(openai_base_url=emulator.base_url, openai_api_key="")).problem() == "HTTP 401"
    closed = ApiCheck(Settings(openai_base_url=f"http://127.0.0.1:{free_port()}/v1")).problem()
    assert closed is not None and "Connection refused" in closed


def test_without_a_base_url_the_readiness_check_asks_openai_itself() -> None:
    """OPENAI_BASE_URL unset (the worker talks to OpenAI): /readyz checks OpenAI's /models,
    the URL the SDK uses, instead of failing to start."""
    assert ApiCheck(Settings(openai_base_url=None)).url == "https://api.openai.com/v1/models"
    assert ApiCheck(Settings(openai_base_url="http://127.0.0.1:9/v1/")).url == "http://127.0.0.1:9/v1/models"
