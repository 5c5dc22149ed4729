"""The conversation service: the steps of one conversation, one at a time.

`advance(conversation_id)` runs whenever the conversation is due on the schedule (a new
event, a poll, a retry, a cancel request). Holding the conversation's lease, it takes the
active batch through its phase's handler, applies the transition that comes back (one
store write), and goes on while the transition says so:

    (no batch) --opening--> STARTING --starting--> RUNNING --following--> ...
    RUNNING --requires_action--> tool round (tools actor) --outputs submitted--> RUNNING
    RUNNING --ended--> answered and released --> the next batch, in the same step
    STARTING/RUNNING --cancel, timeout, give up--> answered, STOPPING --run stopped--> released

Between two steps nothing holds a thread: the next step is a due time in Redis.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_type

import structlog

from worker import metrics
from worker.backends.base import RunBackend, ToolCall
from worker.batch import Batch, Phase
from worker.circuit import Circuit
from worker.conversation import (
    deltas,
    endings,
    following,
    holding,
    late_copies,
    opening,
    starting,
    stopping,
    tool_round,
)
from worker.conversation.context import Context, ToolDispatch
from worker.conversation.transitions import (
    Answer,
    Checkpoint,
    DispatchTools,
    Finish,
    Idle,
    Later,
    Open,
    Polled,
    RejectEvent,
    Step,
    Transition,
    Wait,
)
from worker.errors import PermanentApiError, ThreadNotFoundError, TransientApiError
from worker.events import OutboundEntry
from worker.polling import PollPlanner
from worker.settings import Settings
from worker.store.conversation_store import Store
from worker.store.schedule import NotBegun
from worker.tools import ToolRunner

log = structlog.get_logger("worker.service")

Handler = Callable[[Context, Step, Batch], Transition]
HANDLERS: dict[Phase, Handler] = {
    Phase.STARTING: starting.handle,
    Phase.RUNNING: following.handle,
    Phase.STOPPING: stopping.handle,
}
# A step applies at most this many transitions (about a dozen batches answered at once in a
# row, rejections say); the rest wait for the next step, so that one conversation never
# holds a worker for long.
MAX_TRANSITIONS = 32


@dataclass(frozen=True)
class Outcome:
    """Where applying a transition left the step: ended (and whether the lease was given
    back with the last write), or going on with `batch` (None: open the next one)."""

    ended: bool
    lease_released: bool = False
    step: Step | None = None
    batch: Batch | None = None


class ConversationService:
    def __init__(self, store: Store, backend: RunBackend, settings: Settings,
                 dispatch_tools: ToolDispatch, tool_runner: ToolRunner | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 circuit: Circuit | None = None) -> None:
        runner = tool_runner or ToolRunner(settings.tool_timeout_seconds, settings.tool_output_max_chars)
        self.ctx = Context(store, backend, settings, dispatch_tools, runner, clock, rng or random.Random(),
                           circuit or Circuit(clock))

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def backend(self) -> RunBackend:
        return self.ctx.backend

    @property
    def planner(self) -> PollPlanner:
        return self.ctx.planner

    @property
    def tool_runner(self) -> ToolRunner:
        return self.ctx.tool_runner

    def seed_planner(self) -> None:
        self.ctx.seed_planner()

    # --- entry points ------------------------------------------------------------------
    def advance(self, conversation_id: str, claimed: float | None = None) -> None:
        """Take the next steps of a conversation that is due (`claimed`: the schedule score
        of the claim this call answers; a changed score means the call is stale)."""
        s = self.ctx.settings
        begun = self.store.schedule.begin_step(conversation_id, lease_seconds=s.lease_seconds,
                                               claimed=claimed, inbox_head=s.max_batch_events)
        if isinstance(begun, NotBegun):
            return  # stale, or another worker holds the lease (the claim comes due again)
        released = False
        try:
            step, batch = Step(begun.token), begun.batch()
            if batch is None:
                first = opening.open_next(self.ctx, conversation_id, begun.inbox_head, begun.thread_id)
            else:
                first = self._first_transition(step, batch, begun.cancel_at)
            released = self._run(conversation_id, step, first)
        except Exception as exc:  # noqa: BLE001 - a step must never crash-loop a conversation
            released = self._crashed(conversation_id, begun.token, exc)
        finally:
            self.ctx.circuit.release_probe()  # a probe this step held without a call goes back
            if not released:
                self.store.schedule.end_step(conversation_id, begun.token)

    def run_tools(self, conversation_id: str, batch_id: str, run_id: str, calls: list[ToolCall]) -> None:
        """The tools actor's step: run one tool round and submit its outputs."""
        tool_round.run_tools(self.ctx, conversation_id, batch_id, run_id, calls)

    # --- the loop ----------------------------------------------------------------------
    def _first_transition(self, step: Step, batch: Batch, cancel_at: float | None) -> Transition:
        if cancel_at is not None and not batch.published and batch.created_at <= cancel_at:
            return endings.cancel(self.ctx, batch, "cancelled", "the conversation was cancelled")
        return self._handle(step, batch)

    def _handle(self, step: Step, batch: Batch) -> Transition:
        """The batch's phase handler; an answered batch is stopping whatever its phase."""
        phase = Phase.STOPPING if batch.published else batch.phase
        held = holding.gate(self.ctx, batch)
        if held is not None:
            return held  # the API circuit is open: no API call (or the hold just ended)
        try:
            return HANDLERS[phase](self.ctx, step, batch)
        except ThreadNotFoundError as exc:  # the server lost the thread: not an API failure
            return endings.thread_lost(self.ctx, batch, exc)
        except TransientApiError as exc:  # while the circuit is open, the outage's: not counted
            return holding.api_failed(self.ctx, batch, exc)
        except PermanentApiError as exc:
            if exc.refuses_the_deployment:  # /readyz names OPENAI_API_KEY until a call succeeds
                self.ctx.circuit.refused(exc.code, exc.status)
            return endings.api_failed(self.ctx, batch, exc)

    def _run(self, cid: str, step: Step, transition: Transition) -> bool:
        """Apply transitions until one ends the step; whether the lease went back with it."""
        for applied in range(1, MAX_TRANSITIONS + 1):
            outcome = self._apply(cid, step, transition)
            if outcome.ended or outcome.step is None:
                return outcome.lease_released
            if applied == MAX_TRANSITIONS:
                break  # before the next handler: what it decides (API calls) would be lost
            step = outcome.step
            if outcome.batch is None:
                transition = opening.open_next(self.ctx, cid)
            else:
                transition = self._handle(step, outcome.batch)
        self.store.schedule.put(cid, self.ctx.clock())  # more to do: the next step goes on
        return False

    def _apply(self, cid: str, step: Step, t: Transition) -> Outcome:
        """The store write a transition names, and where it leaves the step."""
        batches, now = self.store.batches, self.ctx.clock()
        self._write_deltas(step, t)
        ended = Outcome(ended=True)
        if isinstance(t, Open):
            if not batches.open(t.batch, taken=t.taken, token=step.token):
                return self._apply(cid, step, Idle())
            return Outcome(False, step=Step(step.token, fresh=True), batch=t.batch)
        if isinstance(t, Checkpoint):
            if not batches.save(t.batch, token=step.token).written:
                return ended  # a newer lease holder owns the batch now
            # `fresh` counts only while the batch has started nothing (reconcile.py).
            fresh = step.fresh and t.batch.phase is Phase.STARTING
            return Outcome(False, step=Step(step.token, fresh=fresh, known_run=t.known_run, create_now=t.create_now),
                           batch=t.batch)
        if isinstance(t, Wait):
            write = batches.save(t.batch, token=step.token, due=now + t.delay, release=True)
            return Outcome(True, write.lease_released)
        if isinstance(t, Later):
            self.store.schedule.put(cid, t.due)
            return ended  # the lease goes back with end_step
        if isinstance(t, Polled):
            return Outcome(True, batches.record_poll(t.batch, token=step.token, due=now + t.delay).lease_released)
        if isinstance(t, DispatchTools):
            write = batches.save(t.batch, token=step.token, due=now + t.delay, release=True)
            if write.written:
                self.ctx.dispatch_tools(cid, t.batch.batch_id, t.run_id, t.calls)
            return Outcome(True, write.lease_released)
        if isinstance(t, Answer | Finish):
            return self._publish(step, t)
        if isinstance(t, RejectEvent):
            return self._reject_event(step, t)
        assert_type(t, Idle)
        if t.recheck_at is not None:  # a late copy is watched for: stay on the schedule
            self.store.late_copies.look_again(cid, t.recheck_at, now)
        elif not self.store.schedule.retire_if_idle(cid):
            self.store.schedule.put(cid, now)  # an event arrived meanwhile
        return ended

    def _write_deltas(self, step: Step, t: Transition) -> None:
        """A transition's deltas go first: a step that dies after them repeats them (its
        run.started is written once per run, deltas.lua), not loses them."""
        if isinstance(t, Checkpoint | Wait | DispatchTools) and t.deltas:
            self.store.deltas.write(t.batch, t.deltas, token=step.token)

    def _publish(self, step: Step, t: Answer | Finish) -> Outcome:
        release = isinstance(t, Finish)
        result = self.store.outbound.publish(t.batch, t.entry.to_json() if t.entry else "",
                                             token=step.token, release=release,
                                             deltas=deltas.answered(t.batch, t.entry) if t.entry else ())
        if not result.accepted:
            return Outcome(ended=True)  # a newer lease holder owns the batch now
        if result.published and t.entry is not None:
            self._observe_published(t.batch, t.entry)
        if not release:
            return Outcome(False, step=Step(step.token), batch=t.batch)
        late_copies.after_release(self.ctx, t.batch, result.events_wait)
        if result.events_wait:
            return Outcome(False, step=Step(step.token), batch=None)
        return Outcome(True, result.lease_released)

    def _reject_event(self, step: Step, t: RejectEvent) -> Outcome:
        written = self.store.outbound.reject_in_batch(t.batch, token=step.token, entry_json=t.entry.to_json(),
                                                      raw=t.raw, reason=t.reason)
        if not written:
            return Outcome(ended=True)  # a newer lease holder owns the batch now
        metrics.observe_outcome(t.entry.type, None, [self.ctx.clock() - t.sent_at], None)
        return Outcome(False, step=step, batch=t.batch)  # a refused request sent nothing: still fresh

    def _observe_published(self, batch: Batch, entry: OutboundEntry) -> None:
        now = self.ctx.clock()
        run_seconds = now - batch.run_started_at if batch.run_started_at else None
        metrics.observe_outcome(entry.type, run_seconds, [now - e.sent_at for e in batch.events], entry.usage)
        log.info("published", conversation_id=batch.conversation_id, event_ids=batch.event_ids,
                 thread_id=batch.thread_id, run_id=batch.run_id, type=entry.type,
                 code=entry.error.code if entry.error else None,
                 run_ms=None if run_seconds is None else int(run_seconds * 1000),
                 total_ms=entry.timings.total_ms)

    def _crashed(self, cid: str, token: int, exc: Exception) -> bool:
        """An unexpected error: the batch's crash count decides (endings.crashed)."""
        log.error("step crashed", conversation_id=cid, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        try:
            batch = self.store.batches.load(cid)
        except (ValueError, TypeError) as unreadable:  # a batch this release cannot read
            log.error("batch unreadable: retried later", conversation_id=cid, error=str(unreadable))
            batch = None
        if batch is None:
            self.store.schedule.put(cid, self.ctx.clock() + self.ctx.backoff(2))
            return False
        outcome = self._apply(cid, Step(token), endings.crashed(self.ctx, batch, exc))
        if outcome.ended or outcome.step is None:
            return outcome.lease_released
        if outcome.batch is not None:  # answered now: the next step (STOPPING) stops the run,
            later = self.ctx.clock() + self.ctx.settings.poll_initial_delay_seconds  # not this one
            self.store.schedule.put(cid, later)
        return False  # (released with events waiting: publish scheduled the next batch now)
