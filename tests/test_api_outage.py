"""The API circuit breaker end to end (issue 13): `assistant-worker run` with two worker
processes, the emulator behind a proxy that resets every connection during an outage.

A 20 s outage under load is ridden out (every event answered `run.completed`, once, in
order) with API_MAX_ATTEMPTS=5, which alone gives up after about 7.5 s of failures; /readyz
says the circuit is open throughout and answers 200 again after. A key the API refuses at
run time makes /readyz name OPENAI_API_KEY until a call with the key succeeds again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import EmulatorConfig, EmulatorServer
from producers import Producer
from tests.conftest import free_port, wait_until
from tests.invariants import check_exactly_once_in_order
from tests.outage_proxy import OutageProxy
from tests.worker_process import worker_process
from worker.settings import Settings

CONVERSATIONS = [f"out-{n}" for n in range(10)]
OUTAGE_SECONDS = 20.0
KEY = "sk-outage-test"


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body (a 503's too); 0 when nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def circuit_gauge(port: int) -> float | None:
    for line in get(port, "/metrics")[1].splitlines():
        if line.startswith("assistant_api_circuit_open"):
            return float(line.split()[-1])
    return None


def worker_env(redis_url: str, base_url: str, port: int) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": KEY,
            "ASSISTANT_ID": "asst_default", "METRICS_PORT": str(port), "WORKER_PROCESSES": "2",
            "WORKER_THREADS": "4", "API_MAX_ATTEMPTS": "5", "LEASE_SECONDS": "10",
            "POLL_MAX_DELAY_SECONDS": "1.0", "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}


@pytest.fixture
def producer(redis_url: str) -> Iterator[Producer]:
    with Producer(Settings(redis_url=redis_url)) as made:
        yield made


def entries(producer: Producer) -> list[dict[str, Any]]:
    return [json.loads(f[b"data"]) for _, f in producer.redis.xrange("assistant:outbound")]


def answered(producer: Producer, event_ids: list[str]) -> bool:
    seen = {e for entry in entries(producer) for e in entry["event_ids"]}
    return set(event_ids) <= seen


def test_a_20_s_outage_under_load_is_ridden_out(redis_url: str, producer: Producer, tmp_path: Path) -> None:
    port = free_port()
    with EmulatorServer(EmulatorConfig(run_seconds=3.0), port=0) as emulator, \
            OutageProxy(emulator.port) as proxy, \
            worker_process(worker_env(redis_url, proxy.base_url, port), stderr=tmp_path / "worker.log"):
        wait_until(lambda: get(port, "/readyz")[0] == 200, 30, 0.1, what="a ready worker")
        sent = {cid: [producer.send_user_message(cid, f"first {cid}")] for cid in CONVERSATIONS}
        wait_until(lambda: all(producer.redis.hget(f"aw:batch:{cid}", "run_id") for cid in CONVERSATIONS),
                   20, 0.05, what="every conversation's run under way")
        proxy.outage(True)
        started = time.monotonic()
        for cid in CONVERSATIONS:
            sent[cid].append(producer.send_user_message(cid, f"second {cid}"))
        status, body = wait_until(lambda: (r := get(port, "/readyz"))[0] == 503 and "circuit is open" in r[1] and r,
                                  15, 0.1, what="/readyz to say the API circuit is open")
        assert "api: the API circuit is open since" in body and "connection_error" in body, body
        assert circuit_gauge(port) == 1.0
        while time.monotonic() - started < OUTAGE_SECONDS:  # the outage's length, checked all along
            status, body = get(port, "/readyz")
            assert status == 503 and "circuit is open" in body, body
            time.sleep(0.5)
        proxy.outage(False)
        for cid in CONVERSATIONS:
            sent[cid].append(producer.send_user_message(cid, f"third {cid}"))
        every = [e for ids in sent.values() for e in ids]
        wait_until(lambda: answered(producer, every), 120, 0.2, what="every event answered")
        found = entries(producer)
        check_exactly_once_in_order(found, sent)
        assert {entry["type"] for entry in found} == {"run.completed"}, [e["error"] for e in found]
        wait_until(lambda: get(port, "/readyz")[0] == 200, 60, 0.2, what="/readyz to answer 200 again")
        assert get(port, "/readyz")[1].startswith("ok\napi: not checked (READY_CHECK_API=false)\n")
        assert circuit_gauge(port) == 0.0
    assert "api circuit open" in (tmp_path / "worker.log").read_text()


def test_a_key_refused_at_run_time_keeps_readyz_naming_it_until_a_call_succeeds(
        redis_url: str, producer: Producer, tmp_path: Path) -> None:
    port = free_port()
    with EmulatorServer(EmulatorConfig(run_seconds=0.2), port=0) as emulator, \
            worker_process(worker_env(redis_url, emulator.base_url, port), stderr=tmp_path / "worker.log"):
        wait_until(lambda: get(port, "/readyz")[0] == 200, 30, 0.1, what="a ready worker")
        first = producer.send_user_message("key-1", "hello")
        wait_until(lambda: answered(producer, [first]), 30, 0.1, what="a first answer")
        emulator.configure(rejected_keys=[KEY])  # the key revoked
        refused = producer.send_user_message("key-2", "hello")
        wait_until(lambda: answered(producer, [refused]), 30, 0.1, what="the refused event's answer")
        (entry,) = [e for e in entries(producer) if e["event_ids"] == [refused]]
        assert entry["type"] == "run.failed" and entry["error"]["code"] == "invalid_api_key"
        assert producer.redis.xlen("aw:deadletter") == 1, "dead-lettered, to requeue once the key works"
        _, body = wait_until(lambda: (r := get(port, "/readyz"))[0] == 503 and r, 10, 0.1,
                             what="/readyz to name the key")
        assert "api: OPENAI_API_KEY is refused by the API (HTTP 401 invalid_api_key)" in body, body
        emulator.configure(rejected_keys=[])  # the key works again
        again = producer.send_user_message("key-3", "hello")
        wait_until(lambda: answered(producer, [again]), 30, 0.1, what="an answer with the key")
        assert [e["type"] for e in entries(producer) if e["event_ids"] == [again]] == ["run.completed"]
        wait_until(lambda: get(port, "/readyz")[0] == 200, 10, 0.1, what="/readyz to answer 200 again")
