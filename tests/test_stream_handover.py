"""A worker process stopping on SIGTERM hands its streams over at once: another process
takes the run on (Responses: re-attached from the cursor; Assistants: polled) without
waiting for the safety poll, and the reply's deltas still join to its text."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from emulator import EmulatorConfig, EmulatorServer
from producers.client import Producer
from tests.conftest import free_port, wait_until
from tests.invariants import delta_violations
from tests.stack import BACKENDS
from tests.worker_process import worker_process
from worker.settings import Settings
from worker.store.deltas import DeltaConfig, DeltaStreams

RUN_SECONDS = 4.0
SAFETY_POLL_SECONDS = 60.0  # far beyond the run: only the hand-over can explain a prompt answer


def env(redis_url: str, emulator: EmulatorServer, backend: str, tmp_path: Path, name: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-good",
            "ASSISTANT_ID": "asst_default", "ASSISTANT_BACKEND": backend, "METRICS_PORT": str(free_port()),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / name), "WORKER_PROCESSES": "1", "LOG_LEVEL": "ERROR",
            "STREAMING": "on", "STREAM_SAFETY_POLL_SECONDS": str(SAFETY_POLL_SECONDS),
            "POLL_MAX_DELAY_SECONDS": "0.5"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stopping_worker_hands_its_streams_over(redis_url: str, backend: str, tmp_path: Path) -> None:
    config = EmulatorConfig(run_seconds=RUN_SECONDS, stream_chunks=40)
    with EmulatorServer(config, port=0) as emulator:
        producer = Producer(Settings(redis_url=redis_url))
        deltas = DeltaStreams(producer.redis, DeltaConfig())
        try:
            with worker_process(env(redis_url, emulator, backend, tmp_path, "a")) as first:
                event_id = producer.send("handover", "tell me a long story").event_id
                wait_until(lambda: sum(d["type"] == "message.delta" for d in deltas.read("handover")) >= 3, 15,
                           what="the first deltas")
                first.send_signal(signal.SIGTERM)
                assert first.wait(30) == 0
            stopped = time.monotonic()
            with worker_process(env(redis_url, emulator, backend, tmp_path, "b")):
                entry = wait_until(lambda: producer.find_answer(event_id), RUN_SECONDS + 20, what="the answer")
                answered_after = time.monotonic() - stopped
        finally:
            stream = deltas.read("handover")
            producer.close()
    assert entry["type"] == "run.completed", entry
    assert answered_after < SAFETY_POLL_SECONDS / 2, answered_after
    assert delta_violations([entry], {"handover": stream}) == []
