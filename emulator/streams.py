"""The events of a streamed run (Assistants v2) or response (Responses API), each with the time it is due.

A stream is laid out when it opens, from the record's plan and the ids its outcome will have
(lifecycle.reserve): the opening events, then the working phase's deltas spread evenly over
in_progress (at most `stream_chunks` text deltas per message), then the final event at the
record's due time, rendered when it is sent from the settled record (so a poll at that moment
agrees). A Responses stream is a pure function of the response and time, so a re-attach with
`starting_after` replays exactly the events a live stream sent. The driver is in sse.py.

Every builder expects `store.lock` to be held.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import lifecycle, render
from .objects import Item, Message, ModelResponse, Run, Step

if TYPE_CHECKING:
    from .store import Store

FINAL = ""  # the name of the final event: chosen by the record's status when it is sent


@dataclass(slots=True)
class Event:
    at: float  # when it is due (epoch seconds)
    name: str  # the SSE event name (FINAL: decided when sent)
    data: Any = None  # JSON data (None for FINAL and live events: rendered when sent)
    item_id: str | None = None  # deltas: the message, output item or tool call they extend
    index: int | None = None  # deltas: position among that object's deltas


def split_text(text: str, pieces: int) -> list[str]:
    """`text` in at most `pieces` nearly equal parts (by code point: a character is never split)."""
    count = min(pieces, len(text))
    if count == 0:
        return []
    size, extra = divmod(len(text), count)
    parts, pos = [], 0
    for index in range(count):
        end = pos + size + (1 if index < extra else 0)
        parts.append(text[pos:end])
        pos = end
    return parts


def spread(events: list[Event], start: float, end: float) -> list[Event]:
    """Give the deltas evenly spaced times from `start` over [start, end); other events the time of the
    delta before them (or `start`)."""
    deltas = sum(1 for event in events if event.index is not None)
    step = (end - start) / deltas if deltas else 0.0
    at, seen = start, 0
    for event in events:
        if event.index is not None:
            at = start + seen * step
            seen += 1
        event.at = at
    return events


# -- Assistants v2 -----------------------------------------------------------------------------------


def run_events(store: Store, run: Run, op: str) -> list[Event]:
    """The stream of createRun / createThreadAndRun (thread.created first) / submitToolOuputsToRun."""
    fl, now = store.flavour, store.clock()
    events = []
    if op == "createThreadAndRun":
        events.append(Event(now, "thread.created", render.thread(run.thread, fl)))
    if op == "submitToolOuputsToRun":
        settled = [step for step in run.steps if step.type == "tool_calls"][-1:]  # the one the outputs completed
        events.extend(Event(now, "thread.run.step.completed", render.step(step, fl)) for step in settled)
    else:
        events.append(Event(now, "thread.run.created", render.run(run, fl)))
    events.append(Event(now, "thread.run.queued", render.run(run, fl)))
    events.append(Event(run.queued_until, "thread.run.in_progress"))
    events.extend(spread(_run_phase(store, run), run.queued_until, run.due_at))
    events.append(Event(run.due_at, FINAL))
    return events


def _run_phase(store: Store, run: Run) -> list[Event]:
    plan, fl = run.plan, store.flavour
    if plan.outcome == "requires_action" and not run.after_tools:
        return _tool_call_events(store, run)
    events = []
    if plan.outcome == "completed" and not run.after_tools:
        for step_id, call in lifecycle.hosted_steps(store, run):
            details = {"type": "tool_calls", "tool_calls": [call]}
            step = Step(step_id, run, run.due_at, "tool_calls", details)
            events.append(Event(0, "thread.run.step.created", render.step(step, fl)))
            events.append(Event(0, "thread.run.step.in_progress", render.step(step, fl)))
            step.status, step.completed_at = "completed", run.due_at
            step.usage = lifecycle.step_usage(run, json.dumps(details))
            events.append(Event(0, "thread.run.step.completed", render.step(step, fl)))
    replies = lifecycle.phase_replies(run)
    incomplete = plan.outcome == "incomplete" and not run.after_tools
    for parts, (step_id, msg_id) in zip(replies, lifecycle.message_ids(store, run, len(replies)), strict=True):
        events.extend(_message_events(store, run, parts, step_id, msg_id, incomplete))
    return events


def _message_events(store: Store, run: Run, parts: Any, step_id: str, msg_id: str, incomplete: bool) -> list[Event]:
    fl, at = store.flavour, run.due_at  # the times GET shows once the message exists
    details = {"type": "message_creation", "message_creation": {"message_id": msg_id}}
    step = Step(step_id, run, at, "message_creation", details)
    opened = render.message(Message(msg_id, run.thread_id, at, "assistant", [], "", status="in_progress",
                                    assistant_id=run.assistant_id, run_id=run.id), fl)
    opened["completed_at"] = None
    events = [Event(0, "thread.run.step.created", render.step(step, fl)),
              Event(0, "thread.run.step.in_progress", render.step(step, fl)),
              Event(0, "thread.message.created", opened), Event(0, "thread.message.in_progress", opened)]
    events.extend(_content_deltas(msg_id, parts, store.config.stream_chunks))
    text = lifecycle.message_text(parts)
    final = Message(msg_id, run.thread_id, at, "assistant", list(parts), text, assistant_id=run.assistant_id,
                    run_id=run.id, status="incomplete" if incomplete else "completed",
                    incomplete_reason="max_tokens" if incomplete else None)
    events.append(Event(0, "thread.message.incomplete" if incomplete else "thread.message.completed",
                        render.message(final, fl)))
    step.status, step.completed_at, step.usage = "completed", at, lifecycle.step_usage(run, text)
    events.append(Event(0, "thread.run.step.completed", render.step(step, fl)))
    return events


def _content_deltas(msg_id: str, parts: Any, chunks: int) -> list[Event]:
    events, count = [], 0
    for index, part in enumerate(parts):
        if part["type"] != "text":  # an image part: one delta, not a text delta
            events.append(Event(0, "thread.message.delta", _message_delta(msg_id, {"index": index, **part})))
            continue
        pieces = split_text(part["text"]["value"], chunks)
        for number, piece in enumerate(pieces):
            annotations = []
            if number == len(pieces) - 1:  # the part's annotations come with its last delta
                annotations = [{"index": i, **a} for i, a in enumerate(part["text"]["annotations"])]
            content = {"index": index, "type": "text", "text": {"value": piece, "annotations": annotations}}
            events.append(Event(0, "thread.message.delta", _message_delta(msg_id, content), msg_id, count))
            count += 1
    return events


def _message_delta(msg_id: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"id": msg_id, "object": "thread.message.delta", "delta": {"content": [content]}}


def _tool_call_events(store: Store, run: Run) -> list[Event]:
    """The tool_calls step of a run that will require action, its calls' arguments streamed as step deltas."""
    fl, chunks = store.flavour, store.config.stream_chunks
    step_id, call_ids = lifecycle.tool_call_ids(store, run)
    step = Step(step_id, run, run.due_at, "tool_calls", {"type": "tool_calls", "tool_calls": []})
    events = [Event(0, "thread.run.step.created", render.step(step, fl)),
              Event(0, "thread.run.step.in_progress", render.step(step, fl))]
    for index, (call, call_id) in enumerate(zip(run.plan.function_calls, call_ids, strict=True)):
        opened = {"index": index, "id": call_id, "type": "function",
                  "function": {"name": call.name, "arguments": "", "output": None}}
        events.append(Event(0, "thread.run.step.delta", _step_delta(step_id, opened)))
        for number, piece in enumerate(split_text(call.arguments, chunks)):
            delta = {"index": index, "type": "function", "function": {"arguments": piece}}
            events.append(Event(0, "thread.run.step.delta", _step_delta(step_id, delta), call_id, number))
    return events


def _step_delta(step_id: str, call: dict[str, Any]) -> dict[str, Any]:
    return {"id": step_id, "object": "thread.run.step.delta",
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}}}


# -- Responses API -----------------------------------------------------------------------------------


def response_events(store: Store, response: ModelResponse) -> list[Event]:
    """Every event of a response's stream, numbered (sequence_number) from 0."""
    fl = store.flavour
    events = [Event(response.created_at, "response.created", {"response": snapshot(response, fl, "queued")}),
              Event(response.created_at, "response.queued", {"response": snapshot(response, fl, "queued")}),
              Event(response.queued_until, "response.in_progress",
                    {"response": snapshot(response, fl, "in_progress")})]
    phase: list[Event] = []
    for output_index, item in enumerate(store.conversations.output_items(response, response.due_at)):
        if item.type == "message":
            phase.extend(_output_message_events(store, item, output_index))
        else:
            phase.extend(_function_call_events(item, output_index, store.config.stream_chunks))
    events.extend(spread(phase, response.queued_until, response.due_at))
    events.append(Event(response.due_at, FINAL))
    for number, event in enumerate(events):
        if event.data is not None:
            event.data = {"type": event.name, **event.data, "sequence_number": number}
    return events


def snapshot(response: ModelResponse, fl: Any, status: str) -> dict[str, Any]:
    """The response as it was while `status` (queued or in_progress): no output, no final fields."""
    body = render.response(response, fl)
    body.update(status=status, output=[])
    body.pop("usage", None)
    for key in ("completed_at", "error", "incomplete_details"):
        if fl.omit_nulls:
            body.pop(key, None)
        else:
            body[key] = None
    return body


def _output_message_events(store: Store, item: Item, output_index: int) -> list[Event]:
    where = {"item_id": item.id, "output_index": output_index}
    opened = {"id": item.id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    events = [Event(0, "response.output_item.added", {"output_index": output_index, "item": opened})]
    count = 0
    for content_index, part in enumerate(item.content):
        at_part = {**where, "content_index": content_index}
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        events.append(Event(0, "response.content_part.added", {**at_part, "part": empty}))
        for piece in split_text(part["text"], store.config.stream_chunks):
            events.append(Event(0, "response.output_text.delta", {**at_part, "delta": piece, "logprobs": []},
                                item.id, count))
            count += 1
        events.append(Event(0, "response.output_text.done", {**at_part, "text": part["text"], "logprobs": []}))
        events.append(Event(0, "response.content_part.done", {**at_part, "part": dict(part)}))
    events.append(Event(0, "response.output_item.done",
                        {"output_index": output_index, "item": render.item(item, store.flavour)}))
    return events


def _function_call_events(item: Item, output_index: int, chunks: int) -> list[Event]:
    where = {"item_id": item.id, "output_index": output_index}
    opened = {"type": "function_call", "id": item.id, "call_id": item.call_id, "name": item.name, "arguments": "",
              "status": "in_progress"}
    events = [Event(0, "response.output_item.added", {"output_index": output_index, "item": opened})]
    for number, piece in enumerate(split_text(item.arguments or "", chunks)):
        events.append(Event(0, "response.function_call_arguments.delta", {**where, "delta": piece}, item.id, number))
    events.append(Event(0, "response.function_call_arguments.done",
                        {**where, "name": item.name, "arguments": item.arguments}))
    done = {"type": "function_call", "id": item.id, "call_id": item.call_id, "name": item.name,
            "arguments": item.arguments, "status": "completed"}
    events.append(Event(0, "response.output_item.done", {"output_index": output_index, "item": done}))
    return events
