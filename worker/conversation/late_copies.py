"""Watching a conversation for a late copy of an answered batch's input, and deleting it.

Why: on a Responses server that neither lists responses nor locks a conversation, a batch
whose create's answer was lost is created again once its wait is over (starting.py). The
first create may still complete after that and add the batch's user messages, and an
answer, a second time. Such a batch (`created_again`) is watched from its publication until
its wait has passed once more after its last create (`create_sent_at` + `unseen_wait`), and
each look deletes every copy but the published one (the backend's `remove_late_copies`).

Where the watch lives, and why there: in a small Redis record per conversation
(`aw:latecopy:{conversation}`: per watched batch its texts, the item its copies come after,
what its published run added, until when), written before the batch is published, and in
the conversation's place on the schedule, where an idle conversation comes back every
CHECK_SECONDS for a look (one step under the conversation's lease, like any other). So a
worker crash loses nothing (the record and the schedule are in Redis: whoever claims the
conversation next looks; only a worker that dies in the instant between the publication
and the next Redis call, which puts the conversation back on the schedule, leaves its
record to the conversation's next step), and the watch never holds the conversation up:
it is no batch, so the next batch opens at once; looks pause while a batch runs and go on
when it is released. A batch released meanwhile whose texts are the watched batch's adds what its own
run added to the kept items, so that its answer is never taken for a copy. The record
outlives its watches by RECORD_GRACE_SECONDS, so that a conversation busy throughout still
gets its last look when it idles. What the last look could not delete is counted in
`assistant_duplicate_items_left_total` (and logged).
"""

from __future__ import annotations

from typing import Any

import structlog

from worker import metrics
from worker.batch import Batch
from worker.conversation.context import Context
from worker.errors import PermanentApiError, TransientApiError

log = structlog.get_logger("worker.conversation")

CHECK_SECONDS = 2.0  # between two looks at an idle watched conversation
RECORD_GRACE_SECONDS = 3600.0  # a record outlives its last watch's end by this much


def begin(ctx: Context, batch: Batch, run_id: str) -> None:
    """Before a batch created again is published: watch its conversation."""
    if not batch.created_again or batch.thread_id is None:
        return
    watch = ctx.backend.copy_watch(ctx.run_request(batch, reconciling=True), run_id)
    if watch is None:
        return
    now, cid = ctx.clock(), batch.conversation_id
    until = (batch.create_sent_at or now) + ctx.unseen_wait()
    watches = [w for w in ctx.store.late_copies.load(cid) if w.get("batch_id") != batch.batch_id]
    watches.append({**watch, "batch_id": batch.batch_id, "thread_id": batch.thread_id, "until": until, "left": 0})
    _save(ctx, cid, watches)
    log.info("watching for a late copy", conversation_id=cid, event_ids=batch.event_ids,
             thread_id=batch.thread_id, watch_s=round(until - now, 1))


def after_release(ctx: Context, batch: Batch, events_wait: bool) -> None:
    """A batch was released: keep its answer out of the watches' copies, and bring an idle
    watched conversation back for its next look."""
    if not ctx.backend.capabilities.leaves_late_copies:
        return
    cid = batch.conversation_id
    watches = ctx.store.late_copies.load(cid)
    if not watches:
        return
    texts = [e.content for e in batch.events]
    same = [w for w in watches if w.get("batch_id") != batch.batch_id and w.get("texts") == texts]
    if same and batch.run_id and batch.thread_id:
        kept = _kept(ctx, batch, batch.run_id)
        for watch in same:
            if kept is None:
                watches.remove(watch)  # a copy could not be told from this answer: delete nothing
            else:
                watch["kept"] = list(watch.get("kept") or []) + kept
        _save(ctx, cid, watches)
    if not events_wait and watches:
        now = ctx.clock()
        ctx.store.late_copies.look_again(cid, now + CHECK_SECONDS, now)


def look(ctx: Context, conversation_id: str) -> float | None:
    """An idle conversation's look at its watches: copies found are deleted. When to look
    again (None: nothing is watched any more)."""
    if not ctx.backend.capabilities.leaves_late_copies:
        return None
    watches = ctx.store.late_copies.load(conversation_id)
    if not watches:
        return None
    now, going_on = ctx.clock(), []
    for watch in watches:
        left = _remove(ctx, conversation_id, watch)
        until = float(watch.get("until") or 0.0)
        if left is not None:
            watch["left"] = left
        if (left is not None and now >= until) or now >= until + RECORD_GRACE_SECONDS:
            _ended(conversation_id, watch)
        else:
            going_on.append(watch)
    _save(ctx, conversation_id, going_on)
    return now + CHECK_SECONDS if going_on else None


def _remove(ctx: Context, conversation_id: str, watch: dict[str, Any]) -> int | None:
    try:
        return ctx.backend.remove_late_copies(str(watch["thread_id"]), watch)
    except (TransientApiError, PermanentApiError, KeyError) as exc:
        log.warning("late copy look failed", conversation_id=conversation_id, error=str(exc))
        return None


def _ended(conversation_id: str, watch: dict[str, Any]) -> None:
    left = int(watch.get("left") or 0)
    if left:
        metrics.DUPLICATE_ITEMS_LEFT.inc(left)
        log.warning("a late copy could not be deleted", conversation_id=conversation_id,
                    batch_id=watch.get("batch_id"), items_left=left)


def _kept(ctx: Context, batch: Batch, run_id: str) -> list[str] | None:
    try:
        watch = ctx.backend.copy_watch(ctx.run_request(batch, reconciling=True), run_id)
    except (TransientApiError, PermanentApiError) as exc:
        log.warning("an answer with a watched batch's texts could not be read", conversation_id=batch.conversation_id,
                    error=str(exc))
        return None
    return [str(k) for k in (watch or {}).get("kept") or []]


def _save(ctx: Context, conversation_id: str, watches: list[dict[str, Any]]) -> None:
    last = max((float(w.get("until") or 0.0) for w in watches), default=0.0)
    ctx.store.late_copies.save(conversation_id, watches, last - ctx.clock() + RECORD_GRACE_SECONDS)
