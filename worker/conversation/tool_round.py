"""A tool round: a run that requires action has its tool calls dispatched to the tools
actor, which runs them (without the conversation's lease) and submits all outputs at once.

Claims make a round run once: a duplicated dispatch finds the round claimed; outputs whose
submission failed are kept and submitted again by the next poll without running the tools
again; a round not submitted within the dispatch window (its worker died) is dispatched
again, and that submission is confirmed, since the first may have gone through.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from worker import metrics
from worker.backends.base import RunState, ToolCall, Unseen
from worker.batch import Batch
from worker.conversation import deltas, streamed
from worker.conversation.context import Context
from worker.conversation.starting import BUSY_WAIT_MAX_SECONDS
from worker.conversation.transitions import DispatchTools, Later, Transition, Wait
from worker.errors import PermanentApiError, TransientApiError

log = structlog.get_logger("worker.conversation")
DISPATCH_MARGIN_SECONDS = 10  # past TOOL_TIMEOUT_SECONDS before a round is dispatched again
MIN_CLAIM_SECONDS = 1.0  # a dispatch that came after its window still holds off duplicates a moment


def tools_key(run_id: str, calls: list[ToolCall]) -> str:
    """One requires_action step: the run and its call ids."""
    return f"{run_id}:{','.join(sorted(c.id for c in calls))}"


def window(ctx: Context) -> float:
    return ctx.settings.tool_timeout_seconds + DISPATCH_MARGIN_SECONDS


def on_requires_action(ctx: Context, batch: Batch, run: RunState) -> Transition:
    key, now = tools_key(run.id, run.tool_calls), ctx.clock()
    kept = ctx.store.tool_claims.kept_outputs(batch.conversation_id, key)
    if kept is not None:  # the tools ran, their submission failed: submit again, don't rerun
        return _submit_kept(ctx, batch, key, kept)
    if batch.tools_key == key and batch.tools_at and now - batch.tools_at < window(ctx):
        return Later(batch, batch.tools_at + window(ctx))  # dispatched: wait for its outputs
    if run.idle and run.usage:  # a response of function calls (Responses): its own usage
        batch = batch.with_usage(run.usage)
    again = batch.tools_key == key  # dispatched before: its tool.calls is out already
    batch = batch.evolve(tools_key=key, tools_at=now, tools_redispatched=again)
    return DispatchTools(batch, window(ctx), run.id, run.tool_calls,
                         deltas=() if again else deltas.tool_calls(batch, run.tool_calls))


def _submit_kept(ctx: Context, batch: Batch, key: str, kept: list[dict[str, str]]) -> Transition:
    """Submit kept outputs again; after an unknown outcome, what it may have started first.
    Found, it is followed. On a server that would not show it while it runs (Responses
    without a lock or a listing), it is given the time a create is given (`unseen_wait`)
    before the outputs go again, and the conversation is then watched for a late copy."""
    assert batch.thread_id is not None and batch.run_id is not None
    now, sent_at = ctx.clock(), batch.submit_sent_at
    if sent_at is not None:
        found = ctx.backend.find_submission(batch.thread_id, batch.run_id, [o["tool_call_id"] for o in kept], sent_at)
        if isinstance(found, str):
            ctx.store.tool_claims.forget(batch.conversation_id, key)
            log.info("earlier tool output submission found", conversation_id=batch.conversation_id,
                     run_id=batch.run_id, next_run_id=found)
            return Wait(batch.evolve(run_id=found, tools_key=None, submit_sent_at=None, phase_started_at=now, polls=0),
                        ctx.planner.next_delay(0.0, 0))
        if isinstance(found, Unseen):
            until = sent_at + ctx.unseen_wait()
            if now < until:
                waits = batch.busy_waits + 1
                return Wait(batch.evolve(busy_waits=waits), min(BUSY_WAIT_MAX_SECONDS, ctx.backoff(waits), until - now))
            log.warning("no sign of an earlier tool output submission: submitting again",
                        conversation_id=batch.conversation_id, run_id=batch.run_id, waited_s=round(now - sent_at, 1))
            # Watched after publication as a create made again is (late_copies.py).
            batch = batch.evolve(created_again=True, create_sent_at=now, busy_waits=0)
    after = submit(ctx, batch, kept, again=True)
    if isinstance(after, Batch):
        ctx.store.tool_claims.forget(batch.conversation_id, key)
        return Wait(after, _next_look(ctx, after))
    return Wait(batch.evolve(tools_key=None, submit_sent_at=now if after.maybe_applied else sent_at),
                ctx.planner.next_delay(0.0, 0))


def run_tools(ctx: Context, conversation_id: str, batch_id: str, run_id: str, calls: list[ToolCall]) -> None:
    """The tools actor: run one round's calls and submit all their outputs at once."""
    batch = ctx.store.batches.load(conversation_id)
    if batch is None or batch.batch_id != batch_id or batch.run_id != run_id or batch.published:
        return  # the batch moved on (cancelled, finished): its tools are not wanted
    key = tools_key(run_id, calls)
    if not ctx.store.tool_claims.claim(conversation_id, key, _claim_seconds(ctx, batch)):
        return  # a duplicate delivery: another worker runs (or just ran) these calls
    outputs = _run(ctx, batch, run_id, calls)
    # The API circuit open: not sent now, kept for the poll after the outage.
    after = NOT_SENT if ctx.circuit.is_open else submit(ctx, batch, outputs, again=batch.tools_redispatched)
    if isinstance(after, Failed):  # kept for the next poll to submit again: the tools do not run twice
        s = ctx.settings  # kept as long as the run may wait (its timeout, and a hold)
        ctx.store.tool_claims.keep_outputs(conversation_id, key, outputs,
                                           s.run_timeout_seconds + s.api_outage_hold_seconds)
        written = ["tools_key"] + (["submit_sent_at"] if after.maybe_applied else [])
        after = batch.evolve(tools_key=None, submit_sent_at=ctx.clock() if after.maybe_applied else None)
    else:
        moved_on = ["run_id", "unconfirmed"] if after.run_id != run_id else []
        written = ["phase_started_at", "polls", "submit_sent_at", "stream_owner", *moved_on]
    # These fields only, not the whole batch: this runs without the lease.
    fields = {name: value for name, value in after.to_hash().items() if name in written}
    ctx.store.batches.set_fields(batch, fields, due=ctx.clock() + _next_look(ctx, after))


def _claim_seconds(ctx: Context, batch: Batch) -> float:
    """The claim lasts to the end of the round's window, counted from its dispatch (not from
    now, when the actor got to it): the step that dispatches the round again at the window's
    end must find it free, or that dispatch is dropped and the round waits a window more."""
    left = window(ctx) - (ctx.clock() - batch.tools_at) if batch.tools_at else window(ctx)
    return max(MIN_CLAIM_SECONDS, left)


def _next_look(ctx: Context, batch: Batch) -> float:
    """After a submission: the first poll of the run it goes on with, or, when a stream
    follows that run, the safety poll (its reader makes the batch due when it ends)."""
    if batch.stream_owner:
        return ctx.settings.stream_safety_poll_seconds
    return ctx.planner.next_delay(0.0, 0)


def _run(ctx: Context, batch: Batch, run_id: str, calls: list[ToolCall]) -> list[dict[str, str]]:
    results = ctx.tool_runner.run(calls)
    for result in results:
        metrics.observe_tool(result.tool, result.outcome, result.duration)
        log.info("tool called", conversation_id=batch.conversation_id, event_ids=batch.event_ids,
                 thread_id=batch.thread_id, run_id=run_id, tool=result.tool,
                 outcome=result.outcome, duration_ms=int(result.duration * 1000))
    return [{"tool_call_id": r.call_id, "output": r.output} for r in results]


@dataclass(frozen=True)
class Failed:
    """A submission that failed: it may have gone through all the same (`maybe_applied`:
    the next poll tells, or looks for it), or the run moved on."""

    maybe_applied: bool


NOT_SENT = Failed(maybe_applied=False)


def submit(ctx: Context, batch: Batch, outputs: list[dict[str, str]], *, again: bool) -> Batch | Failed:
    """Submit the outputs; the batch as it goes on, or how the submission failed.
    `again`: an earlier submission of them may have gone through, so a new run this one
    starts is confirmed before it is followed."""
    assert batch.thread_id is not None and batch.run_id is not None
    now = ctx.clock()
    try:
        submitted = ctx.backend.submit_tool_outputs(batch.thread_id, batch.run_id, outputs, batch.first.instructions,
                                                    stream_to=streamed.target(batch))
    except (TransientApiError, PermanentApiError) as exc:
        log.warning("tool output submission failed", conversation_id=batch.conversation_id,
                    run_id=batch.run_id, error=str(exc))
        return Failed(isinstance(exc, TransientApiError) and exc.maybe_applied)
    next_run = submitted.run_id
    log.info("tool outputs submitted", conversation_id=batch.conversation_id, event_ids=batch.event_ids,
             thread_id=batch.thread_id, run_id=batch.run_id, next_run_id=next_run, outputs=len(outputs),
             tools_ms=int((now - (batch.tools_at or now)) * 1000), streamed=submitted.stream_owner is not None)
    # A second copy's deltas are held: its stream is not recorded until it is confirmed.
    owner = submitted.stream_owner if not (again and next_run != batch.run_id) else None
    after = batch.evolve(phase_started_at=now, polls=0, submit_sent_at=None, stream_owner=owner)
    if next_run != batch.run_id:  # the backend goes on in a new run (Responses): follow that one
        after = after.evolve(run_id=next_run, unconfirmed=again)
    return after
