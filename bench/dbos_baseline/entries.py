"""The outbound entries the baseline publishes: the worker's own format (worker.events)."""

from __future__ import annotations

import time
from typing import Any

from worker.events import OutboundEntry, OutboundError, OutboundMessage, Timings

# Run status -> outbound type, as the worker maps them (worker/outcomes.py).
TYPES = {"completed": "run.completed", "failed": "run.failed", "cancelled": "run.cancelled",
         "expired": "run.expired", "incomplete": "run.incomplete"}
TERMINAL = frozenset(TYPES)


def message(raw: dict[str, Any]) -> dict[str, Any]:
    """An assistant message of the API -> the entry's message (its text parts joined)."""
    texts = [str((part.get("text") or {}).get("value") or "") for part in raw.get("content") or []
             if part.get("type") == "text"]
    annotations = [a for part in raw.get("content") or [] if part.get("type") == "text"
                   for a in (part.get("text") or {}).get("annotations") or []]
    return {"id": str(raw["id"]), "role": str(raw.get("role") or "assistant"), "text": "\n".join(texts),
            "annotations": annotations, "created_at": raw.get("created_at")}


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def entry_json(outcome: dict[str, Any], conversation_id: str, event_id: str, sent_at: float) -> str:
    """`outcome`: status, thread_id, run_id, messages, usage, error, run_started_at."""
    now = time.time()
    status = str(outcome.get("status") or "failed")
    started = outcome.get("run_started_at")
    error = outcome.get("error")
    if error is None and status != "completed":
        error = {"code": "server_error" if status == "failed" else status, "message": f"the run ended {status}"}
    return OutboundEntry(
        type=TYPES.get(status, "run.failed"),  # type: ignore[arg-type]
        conversation_id=conversation_id, event_ids=[event_id],
        thread_id=outcome.get("thread_id"), run_id=outcome.get("run_id"),
        messages=[OutboundMessage.model_validate(m) for m in outcome.get("messages") or []],
        error=OutboundError(**error) if error else None,
        usage=outcome.get("usage"),
        timings=Timings(queued_ms=_ms(started - sent_at) if started else None,
                        run_ms=_ms(now - started) if started else None, total_ms=_ms(now - sent_at)),
    ).to_json()
