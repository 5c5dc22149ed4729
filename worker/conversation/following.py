"""RUNNING: follow the run, by what its stream stored or by polling it, until it needs the
worker (tools) or ends (a streamed run: conversation/streamed.py)."""

from __future__ import annotations

import logging

import structlog

from worker import metrics
from worker.backends.base import RunState
from worker.batch import Batch
from worker.conversation import endings, streamed, tool_round
from worker.conversation.context import Context
from worker.conversation.transitions import Polled, Step, Transition, Wait

log = structlog.get_logger("worker.conversation")


def handle(ctx: Context, step: Step, batch: Batch) -> Transition:
    assert batch.thread_id is not None and batch.run_id is not None, "a running batch knows its run"
    run = step.known_run
    changed = batch.api_failures > 0  # a plain poll writes only its count
    if run is None and batch.stream_owner:
        found = streamed.stored(batch)
        if found is not None and found.run is not None:  # the stream's own word: no poll
            metrics.RUN_ENDS_DETECTED.labels(by="stream").inc()
            return on_run_state(ctx, batch.evolve(stream_owner=None, api_failures=0), found.run, True)
        if found is not None:
            batch, changed = streamed.take_over(ctx, batch, found.broken or "broken", found.resumable), True
            if batch.stream_owner:
                return Wait(batch.evolve(api_failures=0), ctx.settings.stream_safety_poll_seconds)
    if run is None:
        run = _poll(ctx, batch)
        if batch.unconfirmed:
            batch, changed = batch.evolve(unconfirmed=not run.confirmed), True
        if run.needs_worker:
            metrics.RUN_ENDS_DETECTED.labels(by="poll").inc()
            if batch.stream_owner:  # seen before its stream said so: its reader writes no more
                batch, changed = batch.evolve(stream_owner=None), True
    if batch.api_failures:
        batch = batch.evolve(api_failures=0)
    return on_run_state(ctx, batch, run, changed)


def _poll(ctx: Context, batch: Batch) -> RunState:
    thread_id, run_id = batch.thread_id, batch.run_id
    assert thread_id is not None and run_id is not None
    if batch.unconfirmed:
        run = ctx.backend.confirm_run(ctx.run_request(batch, reconciling=True), run_id)
    else:
        run = ctx.backend.get_run(thread_id, run_id)
    metrics.RUN_POLLS.inc()
    return run


def on_run_state(ctx: Context, batch: Batch, run: RunState, changed: bool) -> Transition:
    now = ctx.clock()
    _observe(ctx, batch, run, now)
    if run.id != batch.run_id:
        # The backend found that the run went on under another id (Responses: tool outputs
        # submitted by an attempt whose answer was lost): follow that one.
        log.info("run continued elsewhere", conversation_id=batch.conversation_id,
                 run_id=batch.run_id, next_run_id=run.id)
        batch, changed = batch.evolve(run_id=run.id, tools_key=None, submit_sent_at=None), True
    if run.terminal:
        return endings.finish(ctx, batch, run)
    timeout = ctx.settings.run_timeout_seconds
    if batch.run_started_at and now - batch.run_started_at - batch.held_for(now) > timeout:  # held: not counted
        return endings.cancel(ctx, batch, "timeout", f"the run did not finish within {timeout:g} s")
    if run.status == "requires_action":
        return tool_round.on_requires_action(ctx, batch, run)
    if streamed.owner_lost(ctx, batch):
        batch, changed = streamed.take_over(ctx, batch, "its owner's heartbeat expired"), True
    delay = streamed.delay(ctx, batch, run)
    if not changed:
        return Polled(batch, delay)  # the count goes up in Redis (record_poll.lua)
    return Wait(batch.evolve(polls=batch.polls + 1), delay)


def _observe(ctx: Context, batch: Batch, run: RunState, now: float) -> None:
    """Tell the planner how long this phase has run (and when it ended)."""
    if log.isEnabledFor(logging.DEBUG):  # event_ids parses the events: not on every poll
        log.debug("polled", conversation_id=batch.conversation_id, event_ids=batch.event_ids,
                  thread_id=batch.thread_id, run_id=run.id, status=run.status,
                  age_ms=int((now - (batch.phase_started_at or now)) * 1000))
    if not batch.phase_started_at or batch.held_at is not None or batch.held_seconds:
        return  # a run held by the API circuit says nothing about how long runs take
    age = now - batch.phase_started_at
    if run.needs_worker:
        if batch.submit_sent_at is not None:
            return  # seen ended before: waiting for a lost submission's run to show
        ctx.planner.ended(batch.batch_id, age)
        ctx.share_phase_durations()
    else:
        ctx.planner.running(batch.batch_id, age)
