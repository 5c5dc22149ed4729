"""Records to wire JSON objects, in the shape of the flavour (strict = OpenAI's schema)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .flavours import Flavour
from .objects import Assistant, Conversation, Item, Message, ModelResponse, Run, Step, Thread

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


def conversation(c: Conversation, fl: Flavour) -> Json:
    return _finish({"id": c.id, "object": "conversation", "created_at": fl.ts(c.created_at), "metadata": c.metadata},
                   fl)


def item(i: Item, fl: Flavour) -> Json:
    """A conversation item / response output item, in the Responses API's shape."""
    if i.type == "message":
        content: Any = i.content
        if fl.user_content_as_string and i.role == "user":
            content = i.text
        return {"type": "message", "id": i.id, "status": i.status, "role": i.role, "content": content}
    if i.type == "function_call":
        return {"type": "function_call", "id": i.id, "call_id": i.call_id, "name": i.name, "arguments": i.arguments,
                "status": i.status}
    return {"type": "function_call_output", "id": i.id, "call_id": i.call_id, "output": i.output, "status": i.status}


def response(r: ModelResponse, fl: Flavour) -> Json:
    settings = r.settings
    conversation_ref = {"id": r.conversation.id} if r.conversation is not None and fl.echo_conversation else None
    body = _finish({
        "id": r.id, "object": "response", "created_at": fl.ts(r.created_at), "status": r.status,
        "background": r.background, "completed_at": fl.ts(r.completed_at),
        "conversation": conversation_ref,
        "error": r.error,
        "incomplete_details": {"reason": r.incomplete_reason} if r.incomplete_reason else None,
        "instructions": r.instructions, "max_output_tokens": settings.get("max_output_tokens"),
        "max_tool_calls": settings.get("max_tool_calls"), "model": r.model,
        "output": [item(i, fl) for i in r.output], "parallel_tool_calls": settings.get("parallel_tool_calls"),
        "previous_response_id": r.previous_response_id, "prompt_cache_key": settings.get("prompt_cache_key"),
        "reasoning": settings.get("reasoning"), "safety_identifier": settings.get("safety_identifier"),
        "service_tier": settings.get("service_tier"), "store": r.store, "temperature": settings.get("temperature"),
        "text": settings.get("text"), "tool_choice": settings.get("tool_choice"), "tools": r.tools,
        "top_logprobs": settings.get("top_logprobs"), "top_p": settings.get("top_p"),
        "truncation": settings.get("truncation"), "usage": r.usage, "metadata": r.metadata,
    }, fl)
    if body.get("usage", 0) is None:
        del body["usage"]  # the spec's ResponseUsage is not nullable: no usage until a final status
    return body


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
