"""Thin Dramatiq actors: decode the message, call the service, nothing more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import structlog

from worker.backends.base import ToolCall
from worker.service import ConversationService

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


def declare_actors(broker: dramatiq.Broker, queue: str,
                   service: Callable[[], ConversationService]) -> Actors:
    """Declare the actors on `broker`; `service` gives the process's service."""

    def advance_conversations(claims: list[list[Any]]) -> None:
        pairs = [(str(cid), float(claimed)) for cid, claimed in claims]
        svc = service()
        for (cid, claimed), current in zip(pairs, svc.store.claims_current(pairs)):
            if current:  # a duplicated or overtaken message finds its claim replaced
                svc.advance(cid, claimed)

    def run_tools(cid: str, batch_id: str, run_id: str, calls: list[dict[str, str]]) -> None:
        service().run_tools(cid, batch_id, run_id, [ToolCall(**c) for c in calls])

    options = {"broker": broker, "queue_name": queue, "max_retries": 5,
               "min_backoff": 500, "max_backoff": 30_000}
    return Actors(
        advance=dramatiq.actor(advance_conversations, actor_name=ADVANCE, **options),
        run_tools=dramatiq.actor(run_tools, actor_name=RUN_TOOLS, **options),
    )
