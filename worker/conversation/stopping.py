"""STOPPING: the batch is answered; keep the conversation closed until the API reports its
run stopped (or CANCEL_WAIT_SECONDS pass), so that the next batch never meets it."""

from __future__ import annotations

import structlog

from worker.batch import Batch
from worker.conversation.context import Context
from worker.conversation.transitions import Finish, Step, Transition, Wait
from worker.errors import PermanentApiError, TransientApiError

log = structlog.get_logger("worker.conversation")


def handle(ctx: Context, step: Step, batch: Batch) -> Transition:
    later = ctx.settings.poll_initial_delay_seconds
    if not batch.stop_requested and batch.thread_id and batch.run_id:
        _ask_to_stop(ctx, batch, batch.thread_id, batch.run_id)
        return Wait(batch.evolve(stop_requested=True), later)
    if batch.thread_id and batch.run_id is None:  # a create whose answer was lost may have run
        found = ctx.backend.find_run(ctx.run_request(batch, reconciling=True))
        if found is not None and found.active:
            ctx.backend.cancel_run(batch.thread_id, found.id)
            batch = batch.evolve(run_id=found.id)
    stopped = True
    if batch.thread_id and batch.run_id:
        run = ctx.backend.get_run(batch.thread_id, batch.run_id)
        stopped = run.terminal or run.idle
        if stopped and batch.unconfirmed:
            batch = _confirm_stopped(ctx, batch, batch.run_id)
    if stopped or ctx.clock() >= (batch.cancel_deadline or 0.0):
        return Finish(batch)
    return Wait(batch, later)


def _ask_to_stop(ctx: Context, batch: Batch, thread_id: str, run_id: str) -> None:
    try:
        ctx.backend.cancel_run(thread_id, run_id)
    except (TransientApiError, PermanentApiError) as exc:
        log.info("cancel request failed; polling until the run stops",
                 conversation_id=batch.conversation_id, run_id=run_id, error=str(exc))


def _confirm_stopped(ctx: Context, batch: Batch, run_id: str) -> Batch:
    """A stopped run that may have repeated an earlier one's input: let the backend drop
    its copy (best effort: the batch is answered already), and keep the run that stays in
    the conversation as the batch's, so that the release records it as the last."""
    try:
        confirmed = ctx.backend.confirm_run(ctx.run_request(batch, reconciling=True), run_id)
    except (TransientApiError, PermanentApiError) as exc:
        log.warning("could not confirm a stopped run", conversation_id=batch.conversation_id,
                    run_id=run_id, error=str(exc))
        return batch
    return batch.evolve(run_id=confirmed.id)
