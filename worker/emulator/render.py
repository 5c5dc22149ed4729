"""Records to wire JSON objects, in the shape of the flavour (strict = OpenAI's schema)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .flavours import Flavour
from .objects import Assistant, Message, Run, Step, Thread

T = TypeVar("T")
Json = dict[str, Any]
_EMPTY_OMITTED = frozenset({"metadata", "attachments", "tool_resources"})


def assistant(a: Assistant, fl: Flavour) -> Json:
    return _finish({
        "id": a.id, "object": "assistant", "created_at": fl.ts(a.created_at), "name": a.name,
        "description": a.description, "model": a.model, "instructions": a.instructions, "tools": a.tools,
        "tool_resources": a.tool_resources if a.tool_resources is not None else {}, "metadata": a.metadata,
        "temperature": a.temperature, "top_p": a.top_p, "response_format": a.response_format,
    }, fl)


def thread(t: Thread, fl: Flavour) -> Json:
    return _finish({
        "id": t.id, "object": "thread", "created_at": fl.ts(t.created_at),
        "tool_resources": t.tool_resources if t.tool_resources is not None else {}, "metadata": t.metadata,
    }, fl)


def message(m: Message, fl: Flavour) -> Json:
    content: Any = m.content
    if fl.user_content_as_string and m.role == "user":
        content = m.text
    incomplete = m.status == "incomplete"
    return _finish({
        "id": m.id, "object": "thread.message", "created_at": fl.ts(m.created_at), "assistant_id": m.assistant_id,
        "thread_id": m.thread_id, "run_id": m.run_id, "role": m.role, "content": content,
        "attachments": m.attachments, "metadata": m.metadata, "status": m.status,
        "incomplete_details": {"reason": m.incomplete_reason} if m.incomplete_reason else None,
        "completed_at": None if incomplete or m.role == "user" else fl.ts(m.created_at),
        "incomplete_at": fl.ts(m.created_at) if incomplete else None,
    }, fl)


def run(r: Run, fl: Flavour) -> Json:
    settings = r.settings
    required_action = None
    if r.pending_calls is not None:
        required_action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": r.pending_calls}}
    return _finish({
        "id": r.id, "object": "thread.run", "created_at": fl.ts(r.created_at), "assistant_id": r.assistant_id,
        "thread_id": r.thread_id, "status": r.status, "started_at": fl.ts(r.started_at),
        "expires_at": fl.deadline(r.expires_at), "cancelled_at": fl.ts(r.cancelled_at),
        "failed_at": fl.ts(r.failed_at), "completed_at": fl.ts(r.completed_at),
        "required_action": required_action, "last_error": r.last_error, "model": r.model,
        "instructions": r.instructions, "tools": r.tools, "metadata": r.metadata,
        "incomplete_details": {"reason": r.incomplete_reason} if r.incomplete_reason else None,
        "usage": r.usage,
        "temperature": settings.get("temperature"), "top_p": settings.get("top_p"),
        "max_prompt_tokens": settings.get("max_prompt_tokens"),
        "max_completion_tokens": settings.get("max_completion_tokens"),
        "truncation_strategy": settings.get("truncation_strategy"), "tool_choice": settings.get("tool_choice"),
        "parallel_tool_calls": settings.get("parallel_tool_calls"),
        "response_format": settings.get("response_format"),
    }, fl)


def step(s: Step, fl: Flavour) -> Json:
    r = s.run
    last_error = r.last_error if s.status == "failed" else None
    return _finish({
        "id": s.id, "object": "thread.run.step", "created_at": fl.ts(s.created_at), "run_id": r.id,
        "assistant_id": r.assistant_id, "thread_id": r.thread_id, "type": s.type, "status": s.status,
        "cancelled_at": fl.ts(s.cancelled_at), "completed_at": fl.ts(s.completed_at),
        "expired_at": fl.ts(s.expired_at), "failed_at": fl.ts(s.failed_at), "last_error": last_error,
        "step_details": s.details, "usage": s.usage, "metadata": {},
    }, fl)


def page(items: Sequence[T], has_more: bool, render_one: Callable[[T, Flavour], Json], fl: Flavour) -> Json:
    data = [render_one(item, fl) for item in items]
    return {
        "object": "list", "data": data,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _finish(obj: Json, fl: Flavour) -> Json:
    """The loose flavour leaves out what is null or empty, as some compatible servers do."""
    if not fl.omit_nulls:
        return obj
    return {key: value for key, value in obj.items() if value is not None and not (key in _EMPTY_OMITTED and not value)}
