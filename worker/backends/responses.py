"""OpenAI's Responses API in background mode, with one Conversation per conversation.

| worker (Assistants words) | Responses API                                                   |
|---------------------------|-----------------------------------------------------------------|
| thread                    | a Conversation (`conversations.create`)                         |
| create run (+ messages)   | `responses.create(background, store, conversation, input=...)`  |
| poll the run              | `GET /responses/{id}` while `queued` / `in_progress`            |
| requires_action           | a `completed` response whose output holds `function_call` items |
| submit tool outputs       | a new background response with `function_call_output` items     |
| cancel                    | `responses.cancel`                                              |

As OpenAI documents `conversation`, a response's input and output items are added to the
conversation once it completes; while it runs the conversation is locked
(`conversation_locked`). Responses cannot be listed, so a create whose answer was lost (or
whose worker died) is resolved through the conversation's items: once the conversation is
free, the batch's user messages after the previous batch's last output mean our create went
through, and what follows them is adopted (a reply, or function calls to answer) as a run
whose response id is unknown, `items:<the last of our user items>`, published with
`run_id` null. Otherwise nothing of ours is there and the create is sent again (a response
still running refuses it with `conversation_locked`: the caller backs off and looks again).
No look closes the race of an earlier create completing just before that second create goes
through: the second is then confirmed (`confirm_run`) before it is followed: cancelled, or
once it has added its copy of the messages, that copy is deleted from the conversation.

Writes go through the SDK (`client.responses`, `client.conversations`), reads are plain
GETs (api.py). Servers differ: some leave `response.conversation` null, return user
content as a plain string, or refuse to cancel a response in progress (the worker then
waits for it to end).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
import structlog

from worker.backends.api import PAGE_LIMIT, ApiCalls, ApiObserver, json_object, poll_after, run_error
from worker.backends.base import (
    Busy,
    Capabilities,
    RunRef,
    RunRequest,
    RunStart,
    RunState,
    Started,
    ThreadOpened,
    ToolCall,
)
from worker.errors import InvalidRequestError, PermanentApiError, ThreadBusyError, TransientApiError

log = structlog.get_logger(__name__)
CACHED_RESPONSES = 256  # ended responses kept for their output (messages, steps, the last item)
METADATA_VALUE_CHARS = 512  # the API's limit on one metadata value


class _Recent:
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


class ResponsesBackend:
    # Model, instructions and tools come from the settings; no call creates a conversation
    # with its first response; responses cannot be listed; a tool round is a new response.
    capabilities = Capabilities(needs_assistant=False, thread_with_first_run=False, messages_with_run=True,
                                lists_runs=False, tool_round_starts_run=True)

    def __init__(self, client: openai.OpenAI, *, model: str, instructions: str | None,
                 tools: list[dict[str, Any]], observe: ApiObserver | None = None) -> None:
        self.api = ApiCalls(client, observe)
        self.client = self.api.client
        self.model = model
        self.instructions = instructions
        self.tools = [_responses_tool(t) for t in tools]
        self._outputs = _Recent()  # run id -> output items
        self._last_ids = _Recent()  # response id -> the last item it added to the conversation

    # --- the interface -----------------------------------------------------------------
    def start_run(self, request: RunRequest) -> RunStart:
        """The conversation first (recorded before its first response); then, after an
        unknown outcome, what an earlier create left in the conversation is adopted; else
        a response is created (which reconciles once more against a race, see create_run).
        A locked conversation is busy with a response nobody can list: look again later."""
        if request.thread_id is None:
            return ThreadOpened(self.create_thread(request.conversation_id))
        if request.reconciling:
            found = self.find_run(request)
            if found is not None:
                return Started(found, request.thread_id, adopted=True)
        try:
            return Started(self.create_run(request), request.thread_id)
        except ThreadBusyError:
            return Busy(None)

    # --- the calls behind start_run ----------------------------------------------------
    def create_thread(self, conversation_id: str) -> str:
        raw = self.api.call("conversations.create", True, lambda: self.client.conversations.with_raw_response.create(
            metadata={"conversation_id": conversation_id[:METADATA_VALUE_CHARS]}))
        return str(json_object(raw)["id"])

    def create_run(self, request: RunRequest) -> RunState:
        assert request.thread_id is not None
        items = [_user_item(e.content) for e in request.events]
        metadata = {"batch_id": request.batch_id, "attempt": str(request.attempt)}
        if not request.append or request.reconciling:
            # What the conversation holds decides: never the user messages twice.
            block, after, last = self._our_items(request)
            if block is not None and after:
                return _items_state(block, after)  # an earlier create completed meanwhile
            if block is not None:
                items = []
            metadata["since"] = last  # what an earlier create adds from now on comes after it
        try:
            created = self._create(request.thread_id, items, request.instructions, metadata)
        except InvalidRequestError as exc:
            if "no tool output found" not in str(exc).lower():
                raise
        else:
            if request.reconciling and items:
                return self._confirmed(request.thread_id, metadata["since"], _user_input(request), created)
            return created
        if request.reconciling:  # an earlier create of ours may have completed with function calls
            block, after, _ = self._our_items(request)
            if block is not None and after:
                return _items_state(block, after)
        # A cancelled batch left function calls unanswered, and the API refuses a new turn
        # until they are: answer them as abandoned (the refused create did nothing).
        pending = _pending_calls(self._items_after(request.thread_id, ""))
        abandoned = [{"type": "function_call_output", "call_id": call.id,
                      "output": "abandoned: the conversation moved on"} for call in pending]
        return self._create(request.thread_id, abandoned + items, request.instructions, metadata)

    def _confirmed(self, thread_id: str, since: str, expected: InputMatcher, created: RunState) -> RunState:
        """This create went through, so the conversation was free: an earlier create of ours
        that was still running when we looked (`since`: the last item then) may have
        completed just before, and its items are there now. Confirm now, or leave it to the
        next poll (`confirm_run`)."""
        try:
            return self._confirm(thread_id, since, expected, created, [], in_conversation=False)
        except (TransientApiError, PermanentApiError) as exc:
            log.warning("a second response for the same input is not confirmed yet",
                        conversation=thread_id, response_id=created.id, error=str(exc))
            return dataclasses.replace(created, confirmed=False)

    def confirm_run(self, request: RunRequest, run_id: str) -> RunState:
        body, state = self._retrieve_state(run_id)
        output_ids = [str(item.get("id")) for item in body.get("output") or [] if isinstance(item, dict)]
        in_conversation = body.get("status") in ("completed", "incomplete")
        metadata = body.get("metadata") or {}
        if metadata.get("after"):  # a tool round: its input is the outputs of these calls
            since = self._last_output_id(str(metadata["after"]))
            expected = _outputs_input(str(metadata.get("calls") or "").split(","))
        else:  # a create: its input is the batch's user messages
            since = str(metadata["since"]) if "since" in metadata else self._marker(request)
            expected = _user_input(request)
        return self._confirm(request.thread_id, since, expected, state, output_ids, in_conversation=in_conversation)

    def _confirm(self, thread_id: str, since: str, expected: InputMatcher, state: RunState, output_ids: list[str],
                 *, in_conversation: bool) -> RunState:
        """A response's input reaches the conversation once. Items after `since` are those
        added since the look before this response was created: a copy of the `expected`
        input among them that is not this response's own was added by an earlier response
        of ours. Then this one is cancelled or, once it added its own copy (its input and
        output: `in_conversation`), that copy is deleted, and the earlier one is followed."""
        items = self._items_after(thread_id, since)
        matches = expected.matches(items)
        if not matches:
            return state  # nothing of ours there but what this response may add: follow it
        end = matches[0] + len(expected.keys)  # items are added in completion order: the first copy is the earliest
        own = set(output_ids)
        if in_conversation:
            answer = list(itertools.takewhile(lambda i: expected.key(i) is None, items[end:]))
            if own & {str(i.get("id")) for i in answer} or (not own and len(matches) == 1):
                return state  # the first copy is this response's own: it is the only one
        elif state.active:
            try:
                status = self._cancel(state.id)
            except (TransientApiError, PermanentApiError) as exc:  # refused in progress, or failed
                log.info("a second response for the same input is not cancelled yet", conversation=thread_id,
                         response_id=state.id, error=str(exc))
                return dataclasses.replace(state, confirmed=False)  # look again at the next poll
            if status != "cancelled":
                return dataclasses.replace(state, confirmed=False)
        # What this response added after the earlier copy: its output and its input items.
        rest = items[end:]
        to_delete = [str(i["id"]) for i in rest if str(i.get("id")) in own] + \
                    [str(i["id"]) for i in rest if in_conversation and expected.key(i) is not None]
        for item_id in to_delete:
            self.api.call("conversations.items.delete", True, lambda i=item_id: (
                self.client.conversations.items.with_raw_response.delete(i, conversation_id=thread_id)))
        log.info("a second response for the same input was dropped", conversation=thread_id,
                 response_id=state.id, deleted_items=len(to_delete))
        answer = [i for i in rest if expected.key(i) is None and str(i.get("id")) not in own]
        return _items_state(str(items[end - 1]["id"]), answer)

    def find_run(self, request: RunRequest) -> RunState | None:
        """Our user items (after the previous batch's output) and what followed them."""
        block, after, _ = self._our_items(request)
        if block is None or not after:
            return None  # not there, or there without an answer: nothing to follow
        return _items_state(block, after)

    def get_run(self, thread_id: str, run_id: str) -> RunState:
        marker = _items_marker(run_id)
        if marker is not None:
            after = self._items_after(thread_id, marker)
            state = _items_state(marker, after)
            if state.terminal:
                self._outputs.put(run_id, after)  # for the messages and steps published next
            return state
        body, state = self._retrieve_state(run_id)
        if state.status == "requires_action":
            # Were these calls answered already (a submission whose answer was lost, or
            # whose worker died)? Then follow what that submission started.
            after = self._items_after(thread_id, str(body["output"][-1].get("id") or ""))
            outputs = [k for k, item in enumerate(after) if item.get("type") == "function_call_output"]
            if {c.id for c in state.tool_calls} <= {str(after[k].get("call_id")) for k in outputs}:
                return _items_state(str(after[outputs[-1]]["id"]), after[outputs[-1] + 1:])
        return state

    def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[dict[str, str]],
                            instructions: str | None = None) -> str:
        items = [{"type": "function_call_output", "call_id": o["tool_call_id"], "output": o["output"]}
                 for o in outputs]
        metadata = {"after": run_id[:METADATA_VALUE_CHARS]}
        calls = ",".join(o["tool_call_id"] for o in outputs)
        if len(calls) <= METADATA_VALUE_CHARS:  # else a second submission cannot be recognised
            metadata["calls"] = calls
        return self._create(thread_id, items, instructions, metadata).id

    def cancel_run(self, thread_id: str, run_id: str) -> None:
        if _items_marker(run_id) is None:  # else its response id is unknown: wait for it to end
            self._cancel(run_id)

    def _cancel(self, response_id: str) -> str:
        """Cancel a response; its status after."""
        raw = self.api.call("responses.cancel", True, lambda: self.client.responses.with_raw_response.cancel(
            response_id))
        return str(json_object(raw).get("status") or "")

    def run_messages(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        return [_outbound_message(item) for item in self._output(thread_id, run_id)
                if item.get("type") == "message" and item.get("role", "assistant") == "assistant"]

    def run_steps(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        steps = []
        for item in self._output(thread_id, run_id):
            if item.get("type") == "function_call":
                steps.append({"type": "tool_calls", "status": str(item.get("status") or "completed"),
                              "tool_calls": [{"type": "function", "name": item.get("name")}]})
            elif item.get("type") == "message":
                steps.append({"type": "message_creation", "status": str(item.get("status") or "completed"),
                              "tool_calls": []})
        return steps

    def close(self) -> None:
        self.api.close()

    # --- plumbing --------------------------------------------------------------------
    def _create(self, conversation: str, items: list[dict[str, Any]], instructions: str | None,
                metadata: dict[str, str]) -> RunState:
        body: dict[str, Any] = {"model": self.model, "background": True, "store": True,
                                "conversation": conversation, "input": items, "metadata": metadata}
        if instructions or self.instructions:
            body["instructions"] = instructions or self.instructions
        if self.tools:
            body["tools"] = self.tools
        raw = self.api.call("responses.create", True, lambda: self.client.responses.with_raw_response.create(**body))
        return _response_state(json_object(raw), raw.headers)

    def _our_items(self, request: RunRequest) -> tuple[str | None, list[dict[str, Any]], str]:
        """The id of the last of the batch's user items in the conversation (None when they
        are not there), the items after it, and the id of the conversation's last item.
        They are the latest user items after the previous batch's output, in a row."""
        marker = self._marker(request)
        items = self._items_after(request.thread_id, marker)
        last = str(items[-1]["id"]) if items else marker
        expected = _user_input(request)
        size = len(expected.keys)
        users = [i for i, item in enumerate(items) if _is_user_message(item)]
        if not size or len(users) < size:
            return None, [], last
        block = users[-size:]
        if tuple(expected.key(items[i]) for i in block) != expected.keys or block[-1] - block[0] != size - 1:
            return None, [], last
        return str(items[block[-1]]["id"]), items[block[-1] + 1:], last

    def _marker(self, request: RunRequest) -> str:
        """The conversation item after which this batch's items go ('' for the start)."""
        return self._last_output_id(request.after_run_id) if request.after_run_id else ""

    def _last_output_id(self, run_id: str) -> str:
        """The conversation item a run's items end with ('' when they never reached it)."""
        marker = _items_marker(run_id)
        if marker is not None:
            return marker
        cached = self._last_ids.get(run_id)
        if cached is not None:
            return str(cached)
        body, headers = self._retrieve(run_id)
        output = body.get("output") or []
        last = ""  # its items never reached the conversation: look from the start
        if body.get("status") in ("completed", "incomplete") and output:
            last = str(output[-1].get("id") or "")
        if _response_state(body, headers).terminal:
            self._last_ids.put(run_id, last)  # it ended: its items no longer change
        return last

    def _retrieve_state(self, response_id: str) -> tuple[dict[str, Any], RunState]:
        """A response and its state; a response that ended is remembered for its output."""
        body, headers = self._retrieve(response_id)
        state = _response_state(body, headers)
        if state.terminal or state.status == "requires_action":
            self._outputs.put(response_id, _stamped_output(body))
        return body, state

    def _retrieve(self, response_id: str) -> tuple[dict[str, Any], Any]:
        return self.api.read("responses.retrieve", f"responses/{response_id}")

    def _items_after(self, conversation: str, marker: str) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"order": "asc", "limit": PAGE_LIMIT}
        if marker:
            query["after"] = marker
        return self.api.pages("conversations.items.list", f"conversations/{conversation}/items", query)

    def _output(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        cached = self._outputs.get(run_id)
        if cached is not None:
            return list(cached)
        marker = _items_marker(run_id)
        if marker is not None:
            return self._items_after(thread_id, marker)
        body, _ = self._retrieve(run_id)
        return _stamped_output(body)


def _items_marker(run_id: str) -> str | None:
    """The item a run known only through conversation items follows (None for a response id)."""
    return RunRef.decode(run_id).after_item


def _stamped_output(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A response's output items, each with the response's time (items carry none)."""
    at = body.get("completed_at") or body.get("created_at")
    return [{"created_at": at, **item} for item in body.get("output") or [] if isinstance(item, dict)]


def _responses_tool(definition: dict[str, Any]) -> dict[str, Any]:
    """An Assistants function definition in the Responses API's flat shape."""
    function = definition.get("function") or definition
    return {"type": "function", "name": function["name"], "description": function.get("description") or "",
            "parameters": function.get("parameters") or {"type": "object", "properties": {}},
            "strict": False}


def _user_item(content: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": content}]}


def _response_state(body: dict[str, Any], headers: Any) -> RunState:
    status = str(body.get("status") or "queued")
    output = list(body.get("output") or [])
    calls = _pending_calls(output)
    error = run_error(body.get("error"), status, body.get("incomplete_details"), "response")
    if status == "completed" and calls:
        status = "requires_action"
    return RunState(id=str(body["id"]), status=status, tool_calls=calls, error=error,
                    usage=_usage(body.get("usage")), poll_after_ms=poll_after(headers),
                    metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
                    idle=status == "requires_action")


def _items_state(marker: str, after: list[dict[str, Any]]) -> RunState:
    """A run known only through the items that follow our last item (`marker`)."""
    run_id = RunRef(after_item=marker).encode()
    calls = _pending_calls(after)
    if calls:  # before any message: a response may say something and call tools
        return RunState(id=run_id, status="requires_action", tool_calls=calls, idle=True)
    if any(i.get("type") == "message" and i.get("role") == "assistant" for i in after):
        return RunState(id=run_id, status="completed")
    return RunState(id=run_id, status="in_progress")


def _pending_calls(items: list[dict[str, Any]]) -> list[ToolCall]:
    """Function calls not answered by a function_call_output among the same items."""
    answered = {str(i.get("call_id")) for i in items if i.get("type") == "function_call_output"}
    return [ToolCall(id=str(i.get("call_id")), name=str(i.get("name") or ""),
                     arguments=str(i.get("arguments") or "{}"))
            for i in items if i.get("type") == "function_call" and str(i.get("call_id")) not in answered]


def _usage(usage: Any) -> dict[str, int] | None:
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


def _user_input(request: RunRequest) -> InputMatcher:
    """A batch's user messages, by text."""
    return InputMatcher(tuple(e.content.strip() for e in request.events),
                        lambda item: _text(item).strip() if _is_user_message(item) else None)


def _outputs_input(call_ids: list[str]) -> InputMatcher:
    """A tool round's function call outputs, by call id."""
    return InputMatcher(tuple(c for c in call_ids if c),
                        lambda item: str(item.get("call_id")) if item.get("type") == "function_call_output" else None)


def _is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "user"


def _text(item: dict[str, Any]) -> str:
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


def _outbound_message(item: dict[str, Any]) -> dict[str, Any]:
    annotations = [a for part in item.get("content") or [] if isinstance(part, dict)
                   for a in part.get("annotations") or [] if isinstance(a, dict)]
    return {"id": str(item.get("id")), "role": "assistant", "text": _text(item),
            "annotations": annotations, "created_at": item.get("created_at")}
