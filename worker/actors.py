"""Thin Dramatiq actors: decode the message, call the service, nothing more."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import structlog

from worker import health
from worker.backends.base import ToolCall
from worker.conversation.service import ConversationService
from worker.events import CONVERSATION_ID
from worker.outcomes import rejection_entry

log = structlog.get_logger("worker.actors")

ADVANCE = "advance_conversations"
RUN_TOOLS = "run_tools"


@dataclass(frozen=True)
class Actors:
    advance: dramatiq.Actor[Any, Any]
    run_tools: dramatiq.Actor[Any, Any]

    def dispatch_claims(self, claims: list[tuple[str, float]]) -> None:
        self.advance.send([[cid, claimed] for cid, claimed in claims])

    def dispatch_tools(self, cid: str, batch_id: str, run_id: str, calls: list[ToolCall]) -> None:
        payload = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls]
        self.run_tools.send(cid, batch_id, run_id, payload)


def _conversation_id(value: Any) -> str:
    if not isinstance(value, str) or not CONVERSATION_ID.match(value):
        raise ValueError(f"not a conversation id: {str(value)[:80]!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"not an id: {str(value)[:80]!r}")
    return value


def _reject_message(svc: ConversationService, actor: str, payload: Any, reason: str) -> None:
    """A message no producer of ours could have sent: reject it once, never retry it."""
    raw = json.dumps(payload, default=repr)[:10_000]
    entry = rejection_entry(None, [], reason)
    svc.store.outbound.publish_rejection(entry.to_json(), raw, reason)
    log.warning("message rejected", actor=actor, reason=reason)


def declare_actors(broker: dramatiq.Broker, queue: str,
                   service: Callable[[], ConversationService]) -> Actors:
    """Declare the actors on `broker`; `service` gives the process's service."""

    def advance_conversations(claims: Any) -> None:
        svc = service()
        try:
            pairs = [(_conversation_id(cid), float(claimed)) for cid, claimed in claims]
        except (TypeError, ValueError) as exc:
            _reject_message(svc, ADVANCE, claims, f"malformed {ADVANCE} message: {exc}")
            return
        for cid, claimed in pairs:
            health.step_started()  # /healthz times each step, not the whole message
            svc.advance(cid, claimed)  # stops at once when the claim was replaced

    def run_tools(cid: Any, batch_id: Any, run_id: Any, calls: Any) -> None:
        svc = service()
        try:
            tool_calls = [ToolCall(id=str(c["id"]), name=str(c["name"]), arguments=str(c["arguments"]))
                          for c in calls]
            cid, batch_id, run_id = _conversation_id(cid), _text(batch_id), _text(run_id)
        except (TypeError, ValueError, KeyError) as exc:
            _reject_message(svc, RUN_TOOLS, [cid, batch_id, run_id, calls],
                            f"malformed {RUN_TOOLS} message: {exc!r}")
            return
        svc.run_tools(cid, batch_id, run_id, tool_calls)

    def declare(name: str) -> Callable[[Callable[..., None]], dramatiq.Actor[Any, Any]]:
        return dramatiq.actor(actor_name=name, broker=broker, queue_name=queue, max_retries=5,
                              min_backoff=500, max_backoff=30_000)

    return Actors(advance=declare(ADVANCE)(advance_conversations), run_tools=declare(RUN_TOOLS)(run_tools))
