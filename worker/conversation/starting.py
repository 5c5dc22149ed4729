"""STARTING: create the batch's run, or adopt the one an earlier create left.

The create intent (`create_sent`) is written before the call, so that a step that follows
a crash or a lost answer reconciles (reconcile.py) instead of creating a second run.
"""

from __future__ import annotations

import structlog

from worker.backends.base import Appended, Busy, RunState, Started, ThreadOpened
from worker.batch import Batch, Phase
from worker.conversation import endings, holding
from worker.conversation.context import Context
from worker.conversation.reconcile import may_exist_already
from worker.conversation.transitions import Checkpoint, Step, Transition, Wait
from worker.errors import InvalidRequestError

log = structlog.get_logger("worker.conversation")

BUSY_WAIT_MAX_SECONDS = 5.0  # between looks at a conversation another response keeps busy
NO_ASSISTANT = "no assistant_id on the event and ASSISTANT_ID is not set"


def handle(ctx: Context, step: Step, batch: Batch) -> Transition:
    if not ctx.assistant_id(batch) and ctx.backend.capabilities.needs_assistant:
        return endings.reject(ctx, batch, NO_ASSISTANT)
    if batch.create_sent != batch.run_attempt:  # the intent goes out before the request
        return Checkpoint(batch.evolve(create_sent=batch.run_attempt))
    request = ctx.run_request(batch, reconciling=may_exist_already(batch, fresh=step.fresh))
    try:
        started = ctx.backend.start_run(request)
    except InvalidRequestError as exc:
        return endings.refused_event(ctx, batch, exc)
    if isinstance(started, ThreadOpened):
        # A worker that dies before this is written leaves that thread unused: harmless,
        # and nothing was appended to it.
        log.info("thread created", conversation_id=batch.conversation_id, thread_id=started.thread_id)
        return Checkpoint(batch.evolve(thread_id=started.thread_id))
    if isinstance(started, Appended):
        # Recorded after each message, so that a retry appends only the rest (and looks at
        # the thread for the next one's tag first when its outcome is unknown).
        return Checkpoint(batch.evolve(appended_events=started.count, api_failures=0))
    if isinstance(started, Busy):
        return _busy(ctx, batch, started.foreign)
    return adopt(ctx, batch, started)


def adopt(ctx: Context, batch: Batch, started: Started) -> Transition:
    """Follow the run from now on; the user messages went in with it."""
    run, now = started.run, ctx.clock()
    batch = holding.run_started(batch, now)
    if batch.thread_id is None:
        log.info("thread created", conversation_id=batch.conversation_id, thread_id=started.thread_id)
    batch = batch.evolve(
        phase=Phase.RUNNING, thread_id=started.thread_id, run_id=run.id, unconfirmed=not run.confirmed,
        messages_appended=True, api_failures=0, busy_waits=0, polls=0,
        run_started_at=batch.run_started_at or now, phase_started_at=now)
    log.info("run adopted" if started.adopted else "run created", conversation_id=batch.conversation_id,
             event_ids=batch.event_ids, thread_id=batch.thread_id, run_id=run.id, attempt=batch.run_attempt,
             appended=len(batch.events), waited_ms=int((now - batch.oldest_sent_at) * 1000))
    if run.needs_worker and run.confirmed:  # recorded first, then acted on in this step
        return Checkpoint(batch, known_run=run)
    return Wait(batch, ctx.poll_delay(batch, run))


def _busy(ctx: Context, batch: Batch, foreign: RunState | None) -> Transition:
    """Another run holds the thread. One nobody can list (maybe our own earlier create) is
    looked at again soon, for at most RUN_TIMEOUT_SECONDS; another client's is waited for,
    then cancelled, so that the conversation is never stuck."""
    timeout = ctx.settings.run_timeout_seconds
    if foreign is None:
        now = ctx.clock()
        if now - batch.created_at - batch.held_for(now) > timeout:
            return endings.give_up(ctx, batch, "api_error",
                                   f"the conversation stayed busy with another response for {timeout:g} s")
        waits = batch.busy_waits + 1
        return Wait(batch.evolve(busy_waits=waits), min(BUSY_WAIT_MAX_SECONDS, ctx.backoff(waits)))
    failures = batch.api_failures + 1
    if failures >= ctx.settings.api_max_attempts // 2 and batch.thread_id is not None:
        log.warning("cancelling a foreign run", conversation_id=batch.conversation_id,
                    thread_id=batch.thread_id, run_id=foreign.id)
        ctx.backend.cancel_run(batch.thread_id, foreign.id)
    return Wait(batch.evolve(api_failures=failures), ctx.backoff(failures))
