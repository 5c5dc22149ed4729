"""A whole stack in one test process: emulator, real Redis, Dramatiq worker, producer."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import redis

from emulator import EmulatorConfig, EmulatorServer
from producers.client import Producer
from tests.conftest import wait_until
from worker.cli import WORKER_THREAD_TIMEOUT_MS
from worker.logs import configure_logging, reset_logging
from worker.runtime import Runtime, build_runtime
from worker.settings import Settings

# Every end-to-end test that takes a `backend` runs against both APIs.
BACKENDS = ("assistants", "responses")
# The emulator's operationId of a run's creation, per backend.
CREATE_RUN = {"assistants": "createRun", "responses": "createResponse"}

FAST = {
    "poll_initial_delay_seconds": 0.05,
    "poll_min_delay_seconds": 0.02,
    "poll_max_delay_seconds": 0.3,
    "scheduler_interval_seconds": 0.01,
    "api_timeout_seconds": 5.0,
    "cancel_wait_seconds": 5.0,
    "log_format": "console",
    "log_level": "ERROR",
}


class Stack:
    def __init__(self, runtime: Runtime, worker: dramatiq.Worker, emulator: EmulatorServer,
                 producer: Producer) -> None:
        self.runtime = runtime
        self.worker = worker
        self.emulator = emulator
        self.producer = producer
        self.redis: redis.Redis = producer.redis
        self.backend = runtime.settings.assistant_backend

    def runs_created(self) -> int:
        """Runs (Assistants) or responses (Responses) the emulator holds: created, not
        merely asked for (a create refused with conversation_locked creates nothing)."""
        return len(self.emulator.runs())

    def runs_completed(self) -> int:
        """Runs (or responses) the emulator holds as completed."""
        return sum(r["status"] == "completed" for r in self.emulator.runs())

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def send(self, conversation_id: str, content: str, **kwargs: Any) -> str:
        return self.producer.send_user_message(conversation_id, content, **kwargs)

    def entries(self) -> list[dict[str, Any]]:
        raw = self.redis.xrange(self.settings.outbound_stream)
        return [json.loads(fields[b"data"]) for _, fields in raw]

    def answered(self) -> dict[str, list[dict[str, Any]]]:
        """event id -> the entries listing it (exactly one each when all is well)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for entry in self.entries():
            for event_id in entry["event_ids"]:
                found.setdefault(event_id, []).append(entry)
        return found

    def wait_answered(self, event_ids: list[str], timeout: float = 20.0) -> list[dict[str, Any]]:
        """The entries answering `event_ids`, in order, once all are answered."""
        wanted = set(event_ids)
        wait_until(lambda: wanted <= set(self.answered()), timeout,
                   what=f"answers to {len(wanted)} events")
        answered = self.answered()
        return [answered[e][0] for e in event_ids]

    def run_id(self, conversation_id: str) -> str | None:
        """The run of the conversation's active batch, if it has one yet."""
        batch = self.runtime.store.batches.load(conversation_id)
        return batch.run_id if batch else None

    def wait_until_run_started(self, conversation_id: str, timeout: float = 10.0) -> None:
        wait_until(lambda: self.run_id(conversation_id), timeout,
                   what=f"a run for {conversation_id}")

    def wait_idle(self, timeout: float = 20.0) -> None:
        wait_until(lambda: self.redis.zcard("aw:schedule") == 0 and self._queue_drained(), timeout,
                   what="an idle stack")

    def _queue_drained(self) -> bool:
        try:  # join's timeout is in milliseconds: one short look, the deadline is wait_until's
            self.worker.broker.join(self.settings.worker_queue, timeout=200)
        except dramatiq.errors.QueueJoinTimeout:
            return False
        return True


@contextmanager
def running_stack(redis_url: str, emulator_config: EmulatorConfig | None = None,
                  threads: int = 8, idle_poll_ms: int = 100, **overrides: Any) -> Iterator[Stack]:
    """`assistant_backend="responses"` among the overrides runs the Responses backend;
    `idle_poll_ms` is the Dramatiq consumers' idle wait (WORKER_IDLE_POLL_MS); its worker
    threads wait Dramatiq's timeout, as `assistant-worker run` sets it."""
    emulator = EmulatorServer(emulator_config or EmulatorConfig(run_seconds=0.2), port=0)
    emulator.start()
    values = {**FAST, "worker_idle_poll_ms": idle_poll_ms, **overrides}
    settings = Settings(redis_url=redis_url, openai_base_url=emulator.base_url,
                        openai_api_key="sk-test-secret", assistant_id="asst_default", **values)
    configure_logging(settings)
    runtime = build_runtime(settings)
    worker = dramatiq.Worker(runtime.broker, worker_threads=threads, worker_timeout=WORKER_THREAD_TIMEOUT_MS)
    worker.start()
    producer = Producer(settings)
    try:
        yield Stack(runtime, worker, emulator, producer)
    finally:
        worker.stop(timeout=10_000)  # its shutdown closes the runtime, as in a pod
        runtime.broker.close()
        producer.close()
        emulator.stop()
        # The handler writes to this test's stderr, which pytest closes before the autouse
        # fixture resets logging: a finaliser logging in between would write to a closed file.
        reset_logging()
        gc.collect()
