"""What a Responses conversation holds, read defensively from raw JSON: its items, the
responses' states and outputs, and the matching of a batch's input among the items (how the
Responses backend reconciles, since responses cannot be listed)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.backends.api import PAGE_LIMIT, ApiCalls, poll_after, run_error
from worker.backends.base import RunRef, RunRequest, RunState, ToolCall

CACHED_RESPONSES = 256  # ended responses kept for their output (messages, steps, the last item)


class RecentValues:
    """The last CACHED_RESPONSES values by run id, shared by the worker's threads. Only
    what can no longer change goes in (what ended)."""

    def __init__(self) -> None:
        self._values: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> Any:
        with self._lock:
            return self._values.get(run_id)

    def put(self, run_id: str, value: Any) -> None:
        with self._lock:
            self._values[run_id] = value
            self._values.move_to_end(run_id)
            while len(self._values) > CACHED_RESPONSES:
                self._values.popitem(last=False)


class ConversationReads:
    """Reads of responses and conversation items, with what can no longer change cached."""

    def __init__(self, api: ApiCalls) -> None:
        self.api = api
        self.outputs = RecentValues()  # run id -> output items
        self.last_ids = RecentValues()  # response id -> the last item it added to the conversation

    def our_items(self, request: RunRequest) -> tuple[str | None, list[dict[str, Any]], str]:
        """The id of the last of the batch's user items in the conversation (None when they
        are not there), the items after it, and the id of the conversation's last item.
        They are the latest user items after the previous batch's output, in a row."""
        marker = self.marker(request)
        items = self.items_after(request.thread, marker)
        last = str(items[-1]["id"]) if items else marker
        expected = user_input(request)
        size = len(expected.keys)
        users = [i for i, item in enumerate(items) if is_user_message(item)]
        if not size or len(users) < size:
            return None, [], last
        block = users[-size:]
        if tuple(expected.key(items[i]) for i in block) != expected.keys or block[-1] - block[0] != size - 1:
            return None, [], last
        return str(items[block[-1]]["id"]), items[block[-1] + 1:], last

    def marker(self, request: RunRequest) -> str:
        """The conversation item after which this batch's items go ('' for the start)."""
        return self.last_output_id(request.after_run_id) if request.after_run_id else ""

    def last_output_id(self, run_id: str) -> str:
        """The conversation item a run's items end with ('' when they never reached it)."""
        marker = items_marker(run_id)
        if marker is not None:
            return marker
        cached = self.last_ids.get(run_id)
        if cached is not None:
            return str(cached)
        body, headers = self.retrieve(run_id)
        output = body.get("output") or []
        last = ""  # its items never reached the conversation: look from the start
        if body.get("status") in ("completed", "incomplete") and output:
            last = str(output[-1].get("id") or "")
        if response_state(body, headers).terminal:
            self.last_ids.put(run_id, last)  # it ended: its items no longer change
        return last

    def retrieve_state(self, response_id: str) -> tuple[dict[str, Any], RunState]:
        """A response and its state; a response that ended is remembered for its output."""
        body, headers = self.retrieve(response_id)
        state = response_state(body, headers)
        if state.terminal or state.status == "requires_action":
            self.outputs.put(response_id, stamped_output(body))
        return body, state

    def retrieve(self, response_id: str) -> tuple[dict[str, Any], Any]:
        return self.api.read("responses.retrieve", f"responses/{response_id}")

    def items_after(self, conversation: str, marker: str) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"order": "asc", "limit": PAGE_LIMIT}
        if marker:
            query["after"] = marker
        return self.api.pages("conversations.items.list", f"conversations/{conversation}/items", query)

    def output(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        cached = self.outputs.get(run_id)
        if cached is not None:
            return list(cached)
        marker = items_marker(run_id)
        if marker is not None:
            return self.items_after(thread_id, marker)
        body, _ = self.retrieve(run_id)
        return stamped_output(body)


def items_marker(run_id: str) -> str | None:
    """The item a run known only through conversation items follows (None for a response id)."""
    return RunRef.decode(run_id).after_item


def stamped_output(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A response's output items, each with the response's time (items carry none)."""
    at = body.get("completed_at") or body.get("created_at")
    return [{"created_at": at, **item} for item in body.get("output") or [] if isinstance(item, dict)]


def responses_tool(definition: dict[str, Any]) -> dict[str, Any]:
    """An Assistants function definition in the Responses API's flat shape."""
    function = definition.get("function") or definition
    return {"type": "function", "name": function["name"], "description": function.get("description") or "",
            "parameters": function.get("parameters") or {"type": "object", "properties": {}},
            "strict": False}


def user_item(content: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": content}]}


def response_state(body: dict[str, Any], headers: Any) -> RunState:
    status = str(body.get("status") or "queued")
    output = list(body.get("output") or [])
    calls = pending_calls(output)
    error = run_error(body.get("error"), status, body.get("incomplete_details"), "response")
    if status == "completed" and calls:
        status = "requires_action"
    return RunState(id=str(body["id"]), status=status, tool_calls=calls, error=error,
                    usage=usage_of(body.get("usage")), poll_after_ms=poll_after(headers),
                    metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
                    idle=status == "requires_action")


def items_state(marker: str, after: list[dict[str, Any]]) -> RunState:
    """A run known only through the items that follow our last item (`marker`)."""
    run_id = RunRef(after_item=marker).encode()
    calls = pending_calls(after)
    if calls:  # before any message: a response may say something and call tools
        return RunState(id=run_id, status="requires_action", tool_calls=calls, idle=True)
    if any(i.get("type") == "message" and i.get("role") == "assistant" for i in after):
        return RunState(id=run_id, status="completed")
    return RunState(id=run_id, status="in_progress")


def pending_calls(items: list[dict[str, Any]]) -> list[ToolCall]:
    """Function calls not answered by a function_call_output among the same items."""
    answered = {str(i.get("call_id")) for i in items if i.get("type") == "function_call_output"}
    return [ToolCall(id=str(i.get("call_id")), name=str(i.get("name") or ""),
                     arguments=str(i.get("arguments") or "{}"))
            for i in items if i.get("type") == "function_call" and str(i.get("call_id")) not in answered]


def usage_of(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    return {"prompt_tokens": int(usage.get("input_tokens") or 0),
            "completion_tokens": int(usage.get("output_tokens") or 0),
            "total_tokens": int(usage.get("total_tokens") or 0)}


@dataclass(frozen=True)
class InputMatcher:
    """A response's input as it shows in a conversation: consecutive items of one kind
    (`key` is None for items of other kinds) whose keys are `keys`."""

    keys: tuple[str, ...]
    key: Callable[[dict[str, Any]], str | None]

    def matches(self, items: list[dict[str, Any]]) -> list[int]:
        """Where copies of the input start among `items` (copies do not overlap)."""
        starts, i, size = [], 0, len(self.keys)
        while size and i + size <= len(items):
            if tuple(self.key(item) for item in items[i:i + size]) == self.keys:
                starts.append(i)
                i += size
            else:
                i += 1
        return starts


def user_input(request: RunRequest) -> InputMatcher:
    """A batch's user messages, by text."""
    return InputMatcher(tuple(e.content.strip() for e in request.events),
                        lambda item: item_text(item).strip() if is_user_message(item) else None)


def outputs_input(call_ids: list[str]) -> InputMatcher:
    """A tool round's function call outputs, by call id."""
    return InputMatcher(tuple(c for c in call_ids if c),
                        lambda item: str(item.get("call_id")) if item.get("type") == "function_call_output" else None)


def is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "user"


def item_text(item: dict[str, Any]) -> str:
    """A message item's text, whether its content is parts (OpenAI) or a plain string."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    texts = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, str):
            texts.append(part)
    return "\n".join(texts)


def outbound_message(item: dict[str, Any]) -> dict[str, Any]:
    annotations = [a for part in item.get("content") or [] if isinstance(part, dict)
                   for a in part.get("annotations") or [] if isinstance(a, dict)]
    return {"id": str(item.get("id")), "role": "assistant", "text": item_text(item),
            "annotations": annotations, "created_at": item.get("created_at")}


def output_steps(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the outbound entry's steps."""
    steps = []
    for item in output:
        if item.get("type") == "function_call":
            steps.append({"type": "tool_calls", "status": str(item.get("status") or "completed"),
                          "tool_calls": [{"type": "function", "name": item.get("name")}]})
        elif item.get("type") == "message":
            steps.append({"type": "message_creation", "status": str(item.get("status") or "completed"),
                          "tool_calls": []})
    return steps
