"""Building outbound entries (contract section 2) from a batch and its run's outcome."""

from __future__ import annotations

import math
import time
from typing import Any

from worker.backends.base import RunRef
from worker.batch import Batch
from worker.events import OutboundEntry, OutboundError, OutboundMessage, OutboundType, Timings

# Run status -> outbound type and the error code used when the API gives none.
STATUS_TYPES: dict[str, tuple[OutboundType, str | None]] = {
    "completed": ("run.completed", None),
    "failed": ("run.failed", "server_error"),
    "cancelled": ("run.cancelled", "cancelled"),
    "expired": ("run.expired", "expired"),
    "incomplete": ("run.incomplete", "incomplete"),
}


def batch_entry(batch: Batch, kind: OutboundType, *, error: dict[str, str] | None = None,
                messages: list[dict[str, Any]] | None = None,
                steps: list[dict[str, Any]] | None = None, now: float | None = None) -> OutboundEntry:
    now = time.time() if now is None else now
    oldest = batch.oldest_sent_at
    started = batch.run_started_at
    return OutboundEntry(
        type=kind,
        conversation_id=batch.conversation_id,
        event_ids=batch.event_ids,
        thread_id=batch.thread_id,
        run_id=RunRef.decode(batch.run_id).api_id if batch.run_id else None,
        messages=[OutboundMessage.model_validate(m) for m in messages or []],
        steps=steps,
        error=OutboundError(**error) if error else None,
        usage=dict(batch.usage) if batch.usage else None,
        metadata=batch.first.metadata,
        timings=Timings(
            queued_ms=_ms(started - oldest) if started else None,
            run_ms=_ms(now - started) if started else None,
            total_ms=_ms(now - oldest),
        ),
    )


def rejection_entry(conversation_id: str | None, event_ids: list[str], reason: str,
                    sent_at: float | None = None, now: float | None = None,
                    code: str = "invalid_event", metadata: dict[str, str] | None = None) -> OutboundEntry:
    """`event.rejected`: `invalid_event` when the worker found the event invalid, else the
    code of the API that refused it (`string_above_max_length`, ...)."""
    now = time.time() if now is None else now
    return OutboundEntry(
        type="event.rejected",
        conversation_id=conversation_id,
        event_ids=event_ids,
        error=OutboundError(code=code, message=reason),
        metadata=metadata or {},
        timings=Timings(queued_ms=None, run_ms=None, total_ms=_ms(now - sent_at) if sent_at else 0),
    )


def _ms(seconds: float) -> int:
    if not math.isfinite(seconds):
        return 0
    return max(0, min(round(seconds * 1000), 2**53))
