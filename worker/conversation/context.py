"""What every phase needs: the store, the backend, the settings, a clock, the poll planner,
the API circuit."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
import structlog

from worker import polling
from worker.backends.base import RunBackend, RunRequest, RunState, StreamTarget, ToolCall
from worker.batch import Batch
from worker.circuit import Circuit
from worker.polling import PollPlanner
from worker.settings import Settings
from worker.store.conversation_store import Store
from worker.tools import ToolRunner

log = structlog.get_logger("worker.conversation")

# The tools actor's send: conversation, batch, run and its calls.
ToolDispatch = Callable[[str, str, str, list[ToolCall]], None]
BACKOFF_CAP_SECONDS = 30.0
# An earlier create nobody can see running is given at least this long to show (its
# response's items), and three times the 99th percentile of response durations.
UNSEEN_WAIT_MIN_SECONDS = 30.0
UNSEEN_WAIT_DURATIONS = 3.0


@dataclass
class Context:
    store: Store
    backend: RunBackend
    settings: Settings
    dispatch_tools: ToolDispatch
    tool_runner: ToolRunner
    clock: Callable[[], float]
    rng: random.Random = field(default_factory=random.Random)  # private: never the global one
    circuit: Circuit = field(default_factory=Circuit)  # the process's API circuit breaker
    planner: PollPlanner = field(init=False)

    def __post_init__(self) -> None:
        self.planner = PollPlanner(self.settings, self.rng)

    def backoff(self, failures: int) -> float:
        """Exponential from POLL_INITIAL_DELAY_SECONDS, capped, with jitter."""
        s = self.settings
        base = min(BACKOFF_CAP_SECONDS, s.poll_initial_delay_seconds * 2.0 ** max(0, failures - 1))
        return base * self.rng.uniform(1 - s.poll_jitter, 1 + s.poll_jitter)

    def poll_delay(self, batch: Batch, run: RunState) -> float:
        now = self.clock()
        elapsed = now - (batch.phase_started_at or batch.run_started_at or now)
        return self.planner.next_delay(elapsed, batch.polls, run.poll_after_ms)

    def unseen_wait(self) -> float:
        """How long an earlier create that would not show while it runs is waited for:
        the longer of 30 s and three p99 response durations, at most RUN_TIMEOUT_SECONDS."""
        p99 = self.planner.quantile(0.99) or 0.0
        return min(max(UNSEEN_WAIT_MIN_SECONDS, UNSEEN_WAIT_DURATIONS * p99), self.settings.run_timeout_seconds)

    def assistant_id(self, batch: Batch) -> str:
        return batch.first.assistant_id or self.settings.assistant_id or ""

    def run_request(self, batch: Batch, *, reconciling: bool, repeat_ok: bool = False) -> RunRequest:
        """The batch's run request. A conversation whose runs cannot be listed finds this
        batch's items after the previous run's (one Redis read, only when it will look).
        `repeat_ok`: a create may repeat an earlier one that does not show (base.Unseen)."""
        append = not batch.messages_appended
        looks = (reconciling or not append) and not self.backend.capabilities.lists_runs
        return RunRequest(
            conversation_id=batch.conversation_id, thread_id=batch.thread_id,
            assistant_id=self.assistant_id(batch), instructions=batch.first.instructions,
            batch_id=batch.batch_id, attempt=batch.run_attempt, events=batch.events, append=append,
            appended=batch.appended_events, reconciling=reconciling, repeat_ok=repeat_ok,
            opened_at=batch.created_at or None,
            stream_to=StreamTarget(batch.conversation_id, batch.batch_id, batch.event_ids),
            after_run_id=self.store.batches.last_run_id(batch.conversation_id) if looks else None)

    # --- the fleet's run durations ------------------------------------------------------
    def seed_planner(self) -> None:
        """Plan polls from the fleet's recent run durations from the start, not blindly."""
        try:
            self.planner.seed(self.store.history.recent(polling.HISTORY))
        except redis.RedisError as exc:
            log.warning("no shared run durations: polls back off until runs end", error=str(exc))

    def share_phase_durations(self) -> None:
        durations = self.planner.take_unshared()
        if durations:  # one write per SHARE_EVERY ended phases
            self.store.history.share(durations, polling.HISTORY)
