"""How a batch ends: its run finished, it was cancelled or timed out, the API or the worker
kept failing, or its events were refused. Each returns the transition that answers it."""

from __future__ import annotations

from typing import Any

import structlog

from worker.backends.base import RunState
from worker.batch import Batch, Phase
from worker.conversation import late_copies
from worker.conversation.context import Context
from worker.conversation.transitions import Answer, Checkpoint, Finish, RejectEvent, Transition, Wait
from worker.errors import (
    InvalidRequestError,
    PermanentApiError,
    RequestRefusedError,
    RouteNotFoundError,
    ThreadNotFoundError,
    TransientApiError,
)
from worker.outcomes import STATUS_TYPES, batch_entry, rejection_entry

log = structlog.get_logger("worker.conversation")

RETRYABLE_RUN_ERRORS = frozenset({"rate_limit_exceeded", "server_error"})
WITH_MESSAGES = frozenset({"run.completed", "run.incomplete", "run.cancelled"})
MAX_STEP_CRASHES = 3  # unexpected errors on one batch before it is answered internal_error
MAX_THREADS_LOST = 1  # new threads one batch starts after the server lost its thread
_FINAL_REASONS: dict[type[PermanentApiError], str] = {
    RouteNotFoundError: "the API has no route for this call",
    RequestRefusedError: "the API refused a field the worker sends",
    ThreadNotFoundError: "the server lost the conversation's thread again",
}


def finish(ctx: Context, batch: Batch, run: RunState) -> Transition:
    """A run that ended: answered, or (a retryable failure) started again."""
    kind, default_code = STATUS_TYPES.get(run.status, ("run.failed", "server_error"))
    error = run.error or ({"code": default_code, "message": f"the run ended {run.status}"}
                          if default_code else None)
    batch = batch.with_usage(run.usage)
    if kind == "run.failed" and error and error["code"] in RETRYABLE_RUN_ERRORS \
            and batch.run_attempt < ctx.settings.run_retry_limit:
        attempt = batch.run_attempt + 1
        log.warning("run failed, starting it again", conversation_id=batch.conversation_id,
                    run_id=run.id, code=error["code"], attempt=attempt)
        retry = batch.evolve(run_attempt=attempt, phase=Phase.STARTING, run_id=None, tools_key=None,
                             submit_sent_at=None)
        return Wait(retry, ctx.backoff(attempt))
    assert batch.thread_id is not None
    late_copies.begin(ctx, batch, run.id)  # a batch created again: watched from now on
    messages = _messages(ctx, batch.thread_id, run) if kind in WITH_MESSAGES else []
    steps = ctx.backend.run_steps(batch.thread_id, run.id) if ctx.settings.include_run_steps else None
    entry = batch_entry(batch, kind, error=None if kind == "run.completed" else error,
                        messages=messages, steps=steps, now=ctx.clock())
    return Finish(batch, entry)


def _messages(ctx: Context, thread_id: str, run: RunState) -> list[dict[str, Any]]:
    """The run's messages: those its stream carried, else read from the API."""
    return run.messages if run.messages is not None else ctx.backend.run_messages(thread_id, run.id)


def cancel(ctx: Context, batch: Batch, code: str, message: str) -> Transition:
    """Answer the batch now (cancelled, or timed out) with what the run wrote so far; its
    run is stopped after."""
    messages: list[dict[str, Any]] = []
    if batch.run_id and batch.thread_id and not ctx.circuit.is_open:  # open: no call, answer now
        try:
            messages = ctx.backend.run_messages(batch.thread_id, batch.run_id)
        except (TransientApiError, PermanentApiError):
            messages = []  # the answer must not wait: partial messages are best effort
    entry = batch_entry(batch, "run.cancelled", error={"code": code, "message": message},
                        messages=messages, now=ctx.clock())
    ctx.planner.forget(batch.batch_id)  # a stopped run says nothing about run times
    return Answer(_stopping(ctx, batch), entry)


def give_up(ctx: Context, batch: Batch, code: str, message: str) -> Transition:
    """Answer the batch with `run.failed`; a run that may still be going is stopped before
    the conversation moves on."""
    entry = batch_entry(batch, "run.failed", error={"code": code, "message": message}, now=ctx.clock())
    if batch.run_id is None:
        return Finish(batch, entry)
    return Answer(_stopping(ctx, batch), entry)


def reject(ctx: Context, batch: Batch, reason: str, code: str = "invalid_event",
           dead_reason: str | None = None) -> Transition:
    """The batch's events cannot run (the API refused them): answered `event.rejected` with
    `code` and `reason`, dead-lettered with `dead_reason` (else `reason`)."""
    _dead_letter(ctx, batch, dead_reason or reason)
    entry = rejection_entry(batch.conversation_id, batch.event_ids, reason, batch.oldest_sent_at,
                            now=ctx.clock(), code=code, metadata=batch.first.metadata)
    return Finish(batch, entry)


def refused_event(ctx: Context, batch: Batch, exc: InvalidRequestError) -> Transition:
    """The API refused the batch's own content (too long, a bad attachment, an unknown
    assistant): rejected with the API's code and message. When it named one message of
    several, only that event is rejected and the rest of the batch goes on."""
    dead_reason = f"the API refused the event (HTTP {exc.status} {exc.code}): {exc}"
    index = exc.event_index
    if index is None or len(batch.events) < 2 or not 0 <= index < len(batch.events):
        log.warning("event rejected", conversation_id=batch.conversation_id, event_ids=batch.event_ids,
                    status=exc.status, code=exc.code, reason=str(exc))
        return reject(ctx, batch, str(exc), code=exc.code, dead_reason=dead_reason)
    event = batch.events[index]
    log.warning("event rejected", conversation_id=batch.conversation_id, event_ids=[event.event_id],
                status=exc.status, code=exc.code, reason=str(exc))
    entry = rejection_entry(batch.conversation_id, [event.event_id], str(exc), event.sent_at,
                            now=ctx.clock(), code=exc.code, metadata=event.metadata)
    return RejectEvent(batch.without_event(index), entry, event.model_dump_json(), dead_reason, event.sent_at)


def thread_lost(ctx: Context, batch: Batch, exc: ThreadNotFoundError) -> Transition:
    """The server lost the conversation's thread (deleted, expired): the mapping is
    forgotten and the batch starts again on a new thread, its run gone with the old one
    (not an API failure: nothing of the lost thread can be appended twice). A batch that
    is answered already is released; a thread lost twice under one batch is final."""
    lost = batch.thread_id
    if lost is None or exc.thread_id not in (None, lost):
        return api_failed(ctx, batch, exc)  # not the conversation's thread: an ordinary failure
    ctx.store.batches.forget_thread(batch.conversation_id, lost)
    ctx.planner.forget(batch.batch_id)
    log.warning("thread lost on the server: starting a new one", conversation_id=batch.conversation_id,
                event_ids=batch.event_ids, thread_id=lost, run_id=batch.run_id, phase=batch.phase.value,
                error=str(exc))
    if batch.published:
        return Finish(batch.evolve(run_id=None))  # the lost run is not the conversation's last
    if batch.threads_lost >= MAX_THREADS_LOST:
        return _refused(ctx, batch.evolve(run_id=None), exc)
    return Checkpoint(batch.evolve(
        phase=Phase.STARTING, thread_id=None, run_id=None, messages_appended=False, unconfirmed=False,
        tools_key=None, tools_at=None, tools_redispatched=False, polls=0, phase_started_at=None, submit_sent_at=None,
        api_failures=0, busy_waits=0, threads_lost=batch.threads_lost + 1))


def api_failed(ctx: Context, batch: Batch, exc: TransientApiError | PermanentApiError) -> Transition:
    """An API call of the step failed: try again with backoff (the API's Retry-After wins),
    until API_MAX_ATTEMPTS; then answer `run.failed` (or, answered already, stop waiting)."""
    failures = batch.api_failures + 1
    batch = batch.evolve(api_failures=failures)
    log.warning("api step failed", conversation_id=batch.conversation_id, run_id=batch.run_id,
                state=batch.phase.value, failures=failures, error=str(exc))
    if isinstance(exc, PermanentApiError) and exc.final:
        return _refused(ctx, batch, exc)
    if failures < ctx.settings.api_max_attempts:
        retry_after = exc.retry_after if isinstance(exc, TransientApiError) else None
        return Wait(batch, max(retry_after or 0.0, ctx.backoff(failures)))
    if batch.published:
        return Finish(batch)  # answered already, and the API keeps failing: give up waiting
    return give_up(ctx, batch, "api_error", f"the API failed {failures} times: {exc}")


def _refused(ctx: Context, batch: Batch, exc: PermanentApiError) -> Transition:
    """No retry of the same request can succeed (the key refused, a route the server lacks,
    a field of the worker's refused, a thread lost again): final at once, with the API's
    code, and a dead letter to requeue once it is fixed."""
    if batch.published:
        return Finish(batch)
    what = "the API refused OPENAI_API_KEY" if exc.refuses_the_deployment else \
        _FINAL_REASONS.get(type(exc), "the API refused the request")
    reason = f"{what} (HTTP {exc.status} {exc.code}): {exc}"
    _dead_letter(ctx, batch, reason)
    entry = batch_entry(batch, "run.failed", error={"code": exc.code, "message": reason}, now=ctx.clock())
    return Finish(batch, entry) if batch.run_id is None else Answer(_stopping(ctx, batch), entry)


def crashed(ctx: Context, batch: Batch, exc: Exception) -> Transition:
    """A step raised something unexpected (a bug, an answer the worker cannot handle): try
    again with backoff; after MAX_STEP_CRASHES the batch is answered `internal_error` so that
    the conversation moves on."""
    crashes = batch.step_crashes + 1
    batch = batch.evolve(step_crashes=crashes)
    if crashes < MAX_STEP_CRASHES:
        return Wait(batch, ctx.backoff(crashes + 1))
    if batch.published:
        return Finish(batch)
    return give_up(ctx, batch, "internal_error", f"the worker failed on this batch: {type(exc).__name__}")



def _dead_letter(ctx: Context, batch: Batch, reason: str) -> None:
    """Keep the batch's events with the reason, to requeue once it is fixed."""
    ctx.store.outbound.dead_letter([e.model_dump_json() for e in batch.events], reason)


def _stopping(ctx: Context, batch: Batch) -> Batch:
    return batch.evolve(phase=Phase.STOPPING, published=True,
                        cancel_deadline=ctx.clock() + ctx.settings.cancel_wait_seconds)
