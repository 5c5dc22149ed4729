"""The conversation service on real Redis, the fake backend and a clock the test moves:
a deterministic simulation of the worker's steps, without Dramatiq or HTTP."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import redis

from tests.fake_backend import KNOWN_ASSISTANT, FakeBackend
from worker import keys
from worker.backends.base import ToolCall
from worker.batch import Batch
from worker.circuit import Circuit
from worker.conversation.service import ConversationService
from worker.events import InboundEvent
from worker.logs import configure_logging
from worker.settings import Settings
from worker.store.conversation_store import Store
from worker.store.deltas import DeltaConfig
from worker.tools import ToolRunner

START = 1_800_000_000.0
OUTBOUND = "test:outbound"


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    redis: redis.Redis
    clock: FakeClock
    backend: FakeBackend
    settings: Settings
    store: Store = field(init=False)
    service: ConversationService = field(init=False)
    circuit: Circuit = field(init=False)
    dispatched: list[tuple[str, str, str, list[ToolCall]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        configure_logging(self.settings)
        self.store = Store(self.redis, outbound_stream=OUTBOUND, outbound_maxlen=10_000, clock=self.clock,
                           deltas=DeltaConfig.from_settings(self.settings))
        runner = ToolRunner(self.settings.tool_timeout_seconds, self.settings.tool_output_max_chars)
        self.circuit = Circuit(self.clock)
        self.backend.observe = self.circuit.record  # fed every call's outcome, as in a worker
        self.service = ConversationService(self.store, self.backend, self.settings, self._dispatch,
                                           tool_runner=runner, clock=self.clock, rng=random.Random(7),
                                           circuit=self.circuit)

    def _dispatch(self, cid: str, batch_id: str, run_id: str, calls: list[ToolCall]) -> None:
        self.dispatched.append((cid, batch_id, run_id, calls))

    def close(self) -> None:
        self.service.tool_runner.shutdown()

    # --- driving --------------------------------------------------------------------------
    def send(self, cid: str, content: str, event_id: str | None = None, **fields: Any) -> str:
        event = InboundEvent(event_id=event_id or f"{cid}-{self.clock.now:.3f}-{content[:8]}",
                             conversation_id=cid, content=content, sent_at=self.clock(), **fields)
        assert self.store.inbox.accept(event, 3600)
        return event.event_id

    def due(self) -> list[str]:
        return [m.decode() for m in self.redis.zrangebyscore(keys.SCHEDULE, "-inf", self.clock())]

    def next_due(self) -> float | None:
        first = self.redis.zrange(keys.SCHEDULE, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def run_tools(self) -> None:
        while self.dispatched:
            self.service.run_tools(*self.dispatched.pop(0))

    def run_until_idle(self, max_steps: int = 500) -> int:
        """Advance what is due, run dispatched tools, move the clock to the next due time;
        until the schedule is empty. Returns the steps taken."""
        for steps in range(max_steps):
            self.run_tools()
            due = self.due()
            if not due:
                upcoming = self.next_due()
                if upcoming is None:
                    return steps
                self.clock.now = max(self.clock.now, upcoming)
                continue
            for cid in due:
                self.service.advance(cid)
        raise AssertionError(f"not idle after {max_steps} steps")

    # --- reading --------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(fields[b"data"]) for _, fields in self.redis.xrange(OUTBOUND)]

    def deltas(self, cid: str) -> list[dict[str, Any]]:
        """The conversation's delta stream, oldest first."""
        return self.store.deltas.read(cid)

    def batch(self, cid: str) -> Batch | None:
        return self.store.batches.load(cid)

    def lease_held(self, cid: str) -> bool:
        return bool(self.redis.exists(keys.lock(cid)))


def unit_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"assistant_id": KNOWN_ASSISTANT, "poll_initial_delay_seconds": 0.5,
                              "poll_max_delay_seconds": 2.0, "run_timeout_seconds": 60.0,
                              "cancel_wait_seconds": 5.0, "tool_timeout_seconds": 2.0,
                              "api_max_attempts": 4, "log_level": "ERROR", "log_format": "console"}
    values.update(overrides)
    return Settings(**values)
