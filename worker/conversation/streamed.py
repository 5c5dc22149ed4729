"""RUNNING, for a run followed by its stream (worker/streams/): the state its reader stored
is used instead of a poll; while the stream is healthy the run is polled only every
STREAM_SAFETY_POLL_SECONDS; a stream that broke, or whose owner's heartbeat expired, is
re-attached (Responses) or the run is polled from then on (Assistants).
"""

from __future__ import annotations

import structlog

from worker import metrics
from worker.backends.base import RunState, StreamTarget
from worker.batch import Batch
from worker.conversation.context import Context
from worker.streams import state

log = structlog.get_logger("worker.conversation")
# A batch's streams that broke are re-attached this many times; after, its runs are polled
# (a connection that keeps breaking costs a request each time and gains nothing).
MAX_RESUMES = 3


def target(batch: Batch) -> StreamTarget:
    return StreamTarget(batch.conversation_id, batch.batch_id, batch.event_ids)


def stored(batch: Batch) -> state.Stored | None:
    """What the batch's current stream stored for this step, if anything."""
    return state.stored(batch.stream_owner, batch.stream_ended, batch.stream_run)


def delay(ctx: Context, batch: Batch, run: RunState) -> float:
    """Until the next look at a run: while its stream is followed, the safety poll's (or
    sooner, when the run's timeout comes first)."""
    if not batch.stream_owner:
        return ctx.poll_delay(batch, run)
    now = ctx.clock()
    started = batch.run_started_at or now
    timeout_in = started + ctx.settings.run_timeout_seconds + batch.held_for(now) - now
    return max(ctx.settings.poll_min_delay_seconds, min(ctx.settings.stream_safety_poll_seconds, timeout_in))


def owner_lost(ctx: Context, batch: Batch) -> bool:
    """The process that owns the batch's stream stopped beating: the stream is lost."""
    return bool(batch.stream_owner) and not state.owner_alive(ctx.store.redis, batch.stream_owner or "")


def take_over(ctx: Context, batch: Batch, why: str, resumable: bool = True) -> Batch:
    """The stream broke off (its reader said so, or its owner died): re-attach where the
    API can (a new owner, this process), else poll the run from now on."""
    assert batch.thread_id is not None and batch.run_id is not None
    breaks = batch.stream_breaks + 1
    owner = None if breaks > MAX_RESUMES or not resumable else \
        ctx.backend.follow_stream(batch.thread_id, batch.run_id, batch.stream_cursor, target(batch))
    metrics.STREAM_BREAKS.labels(outcome="resumed" if owner else "polled").inc()
    log.info("stream re-attached" if owner else "stream lost: polling", conversation_id=batch.conversation_id,
             run_id=batch.run_id, why=why)
    return batch.evolve(stream_owner=owner, stream_breaks=breaks)
