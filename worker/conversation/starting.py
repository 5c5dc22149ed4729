"""STARTING: create the batch's run, or adopt the one an earlier create left.

The create intent (`create_sent`, and its time `create_sent_at`) is written before the
call, so that a step that follows a crash or a lost answer reconciles (reconcile.py) instead
of creating a second run. Where an earlier create would not show while it runs (`Unseen`:
a Responses server that neither lists responses nor locks a conversation), the batch waits
for it (`Context.unseen_wait` after `create_sent_at`), then records a new intent and
creates again (`created_again`: after publication the conversation is watched for a late
copy, late_copies.py). A create that surely did not go through (a 429) clears
`create_sent_at`: the next create records its intent afresh, and nothing is waited for.
"""

from __future__ import annotations

import structlog

from worker.backends.base import Appended, Busy, RunRequest, RunState, Started, ThreadOpened, Unseen
from worker.batch import Batch, Phase
from worker.conversation import deltas, endings, holding, streamed
from worker.conversation.context import Context
from worker.conversation.reconcile import may_exist_already
from worker.conversation.transitions import Checkpoint, Step, Transition, Wait
from worker.errors import InvalidRequestError, TransientApiError

log = structlog.get_logger("worker.conversation")

BUSY_WAIT_MAX_SECONDS = 5.0  # between looks at a conversation another response keeps busy
NO_ASSISTANT = "no assistant_id on the event and ASSISTANT_ID is not set"


def handle(ctx: Context, step: Step, batch: Batch) -> Transition:
    if not ctx.assistant_id(batch) and ctx.backend.capabilities.needs_assistant:
        return endings.reject(ctx, batch, NO_ASSISTANT)
    if batch.create_sent != batch.run_attempt or batch.create_sent_at is None:
        # The intent goes out before the request; nothing of it can be running unseen yet.
        intent = batch.evolve(create_sent=batch.run_attempt, create_sent_at=ctx.clock())
        return Checkpoint(intent, create_now=True)
    request = ctx.run_request(batch, reconciling=may_exist_already(batch, fresh=step.fresh),
                              repeat_ok=step.create_now)
    try:
        started = ctx.backend.start_run(request)
    except InvalidRequestError as exc:
        return endings.refused_event(ctx, batch, exc)
    except TransientApiError as exc:
        return holding.api_failed(ctx, _after_failure(ctx, batch, request, exc), exc)
    if isinstance(started, ThreadOpened):
        # A worker that dies before this is written leaves that thread unused: harmless,
        # and nothing was appended to it.
        log.info("thread created", conversation_id=batch.conversation_id, thread_id=started.thread_id)
        # Nothing of the batch runs on a conversation made just now: its create follows.
        return Checkpoint(batch.evolve(thread_id=started.thread_id, create_sent_at=ctx.clock()), create_now=True)
    if isinstance(started, Appended):
        # Recorded after each message, so that a retry appends only the rest (and looks at
        # the thread for the next one's tag first when its outcome is unknown).
        return Checkpoint(batch.evolve(appended_events=started.count, api_failures=0))
    if isinstance(started, Busy):
        return _busy(ctx, batch, started.foreign)
    if isinstance(started, Unseen):
        return _unseen(ctx, batch)
    return adopt(ctx, batch, started)


def _after_failure(ctx: Context, batch: Batch, request: RunRequest, exc: TransientApiError) -> Batch:
    """What a failed step may have left unseen: a create whose answer was lost went out
    about now; a step that could create and failed without applying (a 429) left nothing
    (the creates before it were given up already, or there were none): the next create
    records its intent afresh, and does not wait."""
    if batch.thread_id is None:
        return batch  # only the conversation could have been made
    if exc.maybe_applied:
        return batch.evolve(create_sent_at=ctx.clock())
    if not request.reconciling or request.repeat_ok:
        return batch.evolve(create_sent_at=None)
    return batch


def _unseen(ctx: Context, batch: Batch) -> Transition:
    """An earlier create may be running where nothing shows it: look again soon until its
    items show (then it is adopted) or its wait is over; then create again, the intent
    recorded first (a crash after that create waits for it in turn)."""
    now = ctx.clock()
    since = batch.create_sent_at or now  # set: the intent is recorded before any create
    until = since + ctx.unseen_wait()
    if now < until:
        waits = batch.busy_waits + 1
        return Wait(batch.evolve(busy_waits=waits), min(BUSY_WAIT_MAX_SECONDS, ctx.backoff(waits), until - now))
    log.warning("no sign of an earlier create: creating again", conversation_id=batch.conversation_id,
                event_ids=batch.event_ids, thread_id=batch.thread_id, waited_s=round(now - since, 1))
    return Checkpoint(batch.evolve(create_sent_at=now, created_again=True, busy_waits=0), create_now=True)


def adopt(ctx: Context, batch: Batch, started: Started) -> Transition:
    """Follow the run from now on; the user messages went in with it."""
    run, now = started.run, ctx.clock()
    batch = holding.run_started(batch, now)
    if batch.thread_id is None:
        log.info("thread created", conversation_id=batch.conversation_id, thread_id=started.thread_id)
    batch = batch.evolve(
        phase=Phase.RUNNING, thread_id=started.thread_id, run_id=run.id, unconfirmed=not run.confirmed,
        messages_appended=True, api_failures=0, busy_waits=0, polls=0,
        run_started_at=batch.run_started_at or now, phase_started_at=now,
        # A second copy's deltas are held: its stream is not recorded until it is confirmed.
        stream_owner=run.stream_owner if run.confirmed else None)
    log.info("run adopted" if started.adopted else "run created", conversation_id=batch.conversation_id,
             event_ids=batch.event_ids, thread_id=batch.thread_id, run_id=run.id, attempt=batch.run_attempt,
             appended=len(batch.events), waited_ms=int((now - batch.oldest_sent_at) * 1000))
    started_delta = deltas.run_started(batch)  # a retried run's again, with its own id
    if run.needs_worker and run.confirmed:  # recorded first, then acted on in this step
        return Checkpoint(batch, known_run=run, deltas=started_delta)
    return Wait(batch, streamed.delay(ctx, batch, run), deltas=started_delta)


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
