"""The deltas a phase asks for (docs/contract.md, "Deltas"), as values: a transition carries
them and the service writes them (worker/store/deltas.py) before the batch write it names;
a batch's last ones go with its outbound entry.

A polled run (every run today) gets `run.started` when it is first known (created or
adopted; a retried run's again, with its new id), `tool.calls` when it asks for tools,
and with its answer one catch-up `message.delta` per message (what of its text was not
published yet: all of it) and `run.ended`.
"""

from __future__ import annotations

from typing import Any

from worker.backends.base import RunRef, ToolCall
from worker.batch import Batch
from worker.events import OutboundEntry
from worker.store.deltas import Delta


def _fields(batch: Batch, **more: Any) -> dict[str, Any]:
    run_id = RunRef.decode(batch.run_id).api_id if batch.run_id else None
    return {"conversation_id": batch.conversation_id, "event_ids": batch.event_ids, "run_id": run_id, **more}


def run_started(batch: Batch) -> tuple[Delta, ...]:
    """The batch's run (just recorded) exists: "typing"."""
    assert batch.run_id is not None, "a run.started names its run"
    return (Delta("run.started", batch.run_id, _fields(batch)),)


def tool_calls(batch: Batch, calls: list[ToolCall]) -> tuple[Delta, ...]:
    """The run asks for these tools (names, one per call, in the run's order)."""
    return (Delta("tool.calls", batch.run_id or "", _fields(batch, tools=[c.name for c in calls])),)


def answered(batch: Batch, entry: OutboundEntry) -> tuple[Delta, ...]:
    """What goes with the batch's outbound entry: the rest of each message's text (the
    catch-up delta), then run.ended with the entry's type and message ids."""
    run = batch.run_id or ""
    texts = tuple(Delta("message.delta", run, _fields(batch, message_id=m.id), message_id=m.id, text=m.text,
                        catch_up=True)
                  for m in entry.messages)
    ended = Delta("run.ended", run, _fields(batch, outcome=entry.type, message_ids=[m.id for m in entry.messages]))
    return (*texts, ended)
