"""Redis restarts, graceful shutdown and secrets: the worker waits, hands back, never leaks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from emulator import EmulatorConfig, EmulatorServer
from producers import Producer
from tests.conftest import free_port, redis_pings, wait_until
from tests.invariants import check_exactly_once_in_order
from tests.stack import running_stack
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


class RedisProcess:
    """A redis-server this test may kill and restart on the same port and data folder."""

    def __init__(self, folder: Path, *extra: str) -> None:
        self.port = free_port()
        self.folder = folder
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        password = next((self.extra[i + 1] for i, a in enumerate(self.extra) if a == "--requirepass"), "")
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind",
             "127.0.0.1", "--dir", str(self.folder), "--save", "", *self.extra],
            stdout=subprocess.DEVNULL)
        with redis.Redis.from_url(self.url) as client:
            wait_until(lambda: redis_pings(client), 10, what="redis-server")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


def test_redis_killed_and_restarted_loses_no_accepted_event(durable_redis: RedisProcess) -> None:
    """With appendfsync always, events accepted before a Redis crash are answered after it."""
    with running_stack(durable_redis.url, EmulatorConfig(run_seconds=0.5), lease_seconds=3.0) as stack:
        sent = {f"r{i}": [stack.send(f"r{i}", f"before {i}")] for i in range(15)}
        wait_until(lambda: len(stack.entries()) >= 3, 20, what="some answers")
        durable_redis.kill()
        time.sleep(1.0)  # an outage: nothing answers for a moment (not a wait on a condition)
        durable_redis.start()
        for i in range(15):
            sent[f"r{i}"].append(stack.send(f"r{i}", f"after {i}"))
        stack.wait_answered([e for ids in sent.values() for e in ids], timeout=60)
        check_exactly_once_in_order(stack.entries(), sent)


def test_sigterm_hands_work_back_and_another_worker_finishes_it(redis_url: str) -> None:
    """SIGTERM: the pod exits within its grace period; in-flight runs finish elsewhere."""
    with EmulatorServer(EmulatorConfig(run_seconds=2.0), port=0) as emulator, \
            Producer(Settings(redis_url=redis_url)) as producer:
        env = {**os.environ, "REDIS_URL": redis_url, "OPENAI_BASE_URL": emulator.base_url,
               "OPENAI_API_KEY": "sk-x", "ASSISTANT_ID": "asst_default", "METRICS_PORT": "0",
               "WORKER_THREADS": "4", "LEASE_SECONDS": "5", "WORKER_SHUTDOWN_SECONDS": "10"}
        binary = str(Path(sys.executable).parent / "assistant-worker")
        first = subprocess.Popen([binary, "run"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        sent = {f"g{i}": [producer.send_user_message(f"g{i}", f"question {i}")] for i in range(20)}
        client = producer.redis
        wait_until(lambda: len(client.keys("aw:batch:*")) >= 10, 20, what="runs under way")
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        shutdown_seconds = time.monotonic() - started
        assert shutdown_seconds < 15
        second = subprocess.Popen([binary, "run"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            ids = [e for ids in sent.values() for e in ids]
            wait_until(lambda: all(producer.wait_for(e, "0-0", 0.01) for e in ids), 60,
                       interval=0.5, what="every answer")
            entries = [json.loads(f[b"data"]) for _, f in client.xrange("assistant:outbound")]
            check_exactly_once_in_order(entries, sent)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)


def test_secrets_never_appear_in_logs_entries_or_dead_letters(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    server = RedisProcess(tmp_path, "--requirepass", "redis-pa55word")
    server.start()
    try:
        config = EmulatorConfig(run_seconds=0.2, fault_500=0.2, fault_429=0.2, seed=3)
        with running_stack(server.url, config, log_level="DEBUG", log_format="json",
                           worker_tool_modules="tests.sample_tools") as stack:
            ids = [stack.send("s1", "hello"), stack.send("s2", "call:explode"),
                   stack.send("s3", "x", assistant_id="asst_nope"), stack.send("s4", "fail:server_error")]
            stack.redis.rpush("aw:inbox:s5", b"{broken")
            stack.redis.zadd("aw:schedule", {"s5": 0})
            stack.wait_answered(ids, timeout=60)
            wait_until(lambda: stack.redis.xlen("aw:deadletter") >= 2, 10, what="dead letters")
            stored = b"".join(f[b"data"] for _, f in stack.redis.xrange(stack.settings.outbound_stream))
            stored += b"".join(v for _, f in stack.redis.xrange("aw:deadletter") for v in f.values())
        out, err = capfd.readouterr()
        for secret in ("sk-test-secret", "redis-pa55word"):
            assert secret not in out + err
            assert secret.encode() not in stored
    finally:
        server.kill()
