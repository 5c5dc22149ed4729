"""The /v1 operations: URL routing table and one handler per OpenAI operationId."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import conversations, lifecycle, render, sse
from .errors import ApiError
from .objects import WORKING_STATUSES, ModelResponse, Run
from .store import Store

# (method, path under /v1 with "*" for an id, operationId as in the OpenAPI spec)
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "models", "listModels"),
    ("GET", "models/*", "retrieveModel"),
    ("GET", "assistants", "listAssistants"),
    ("POST", "assistants", "createAssistant"),
    ("GET", "assistants/*", "getAssistant"),
    ("POST", "assistants/*", "modifyAssistant"),
    ("DELETE", "assistants/*", "deleteAssistant"),
    ("POST", "threads", "createThread"),
    ("POST", "threads/runs", "createThreadAndRun"),
    ("GET", "threads/*", "getThread"),
    ("DELETE", "threads/*", "deleteThread"),
    ("GET", "threads/*/messages", "listMessages"),
    ("POST", "threads/*/messages", "createMessage"),
    ("GET", "threads/*/messages/*", "getMessage"),
    ("GET", "threads/*/runs", "listRuns"),
    ("POST", "threads/*/runs", "createRun"),
    ("GET", "threads/*/runs/*", "getRun"),
    ("POST", "threads/*/runs/*/cancel", "cancelRun"),
    ("POST", "threads/*/runs/*/submit_tool_outputs", "submitToolOuputsToRun"),
    ("GET", "threads/*/runs/*/steps", "listRunSteps"),
    ("GET", "threads/*/runs/*/steps/*", "getRunStep"),
    ("POST", "conversations", "createConversation"),
    ("GET", "conversations/*", "getConversation"),
    ("DELETE", "conversations/*", "deleteConversation"),
    ("GET", "conversations/*/items", "listConversationItems"),
    ("POST", "conversations/*/items", "createConversationItems"),
    ("GET", "conversations/*/items/*", "getConversationItem"),
    ("DELETE", "conversations/*/items/*", "deleteConversationItem"),
    ("POST", "responses", "createResponse"),
    ("GET", "responses", "listResponses"),  # not in OpenAI's spec: config `list_responses`
    ("GET", "responses/*", "getResponse"),
    ("POST", "responses/*/cancel", "cancelResponse"),
)
SYNC_WAIT_STEP_SECONDS = 0.25  # longest sleep between checks while a synchronous createResponse waits
_TABLE: dict[tuple[str, int], list[tuple[tuple[str, ...], str]]] = {}
for _method, _path, _op in ROUTES:
    _parts = tuple(_path.split("/"))
    _TABLE.setdefault((_method, len(_parts)), []).append((_parts, _op))


@dataclass
class Response:
    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


def match(method: str, parts: Sequence[str]) -> tuple[str, list[str]] | None:
    """The operationId and path ids for a request to /v1/<parts>, or None."""
    for pattern, op in _TABLE.get((method, len(parts)), ()):
        if all(want in ("*", got) for want, got in zip(pattern, parts, strict=True)):
            return op, [got for want, got in zip(pattern, parts, strict=True) if want == "*"]
    return None


def snake_case(operation_id: str) -> str:
    """`createRun` -> `create_run`: the handler method's name."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


class Api:
    """Calls the store for an operation and renders the answer. Thread-safe (takes the store lock)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._handlers: dict[str, Callable[..., Any]] = {op: getattr(self, "_" + snake_case(op)) for _, _, op in ROUTES}

    def call(self, op: str, ids: list[str], query: Mapping[str, str], body: Mapping[str, Any]) -> Response:
        store = self.store
        with store.lock:
            now = store.clock()
            result = self._handlers[op](*ids, query=query, body=body, now=now)
            if isinstance(result, Run):
                return Response(200, render.run(result, store.flavour),
                                self._poll_hint(lifecycle.time_left(result, now)))
            if not isinstance(result, ModelResponse):
                return Response(200, result)
            if op != "createResponse" or result.background or result.status not in WORKING_STATUSES:
                return Response(200, render.response(result, store.flavour),
                                self._poll_hint(conversations.time_left(result, now)))
        return self._await_response(result)

    def stream(self, op: str, ids: list[str], query: Mapping[str, str], body: Mapping[str, Any]) -> sse.Source:
        """Apply a streamed operation and lay out its stream (played by sse.StreamHub, without the lock)."""
        store = self.store
        with store.lock:
            result = self._handlers[op](*ids, query=query, body=body, now=store.clock())
            return sse.open_source(store, op, result, dict(query))

    def _await_response(self, response: ModelResponse) -> Response:
        """A synchronous (not background) createResponse answers once the response is final."""
        store = self.store
        while True:
            with store.lock:
                now = store.clock()
                store.conversations.settle(response, now)
                if response.status not in WORKING_STATUSES:
                    return Response(200, render.response(response, store.flavour))
                left = response.due_at - now
            time.sleep(min(max(left, 0.001), SYNC_WAIT_STEP_SECONDS))

    def _poll_hint(self, left: float | None) -> dict[str, str]:
        config = self.store.config
        if not config.poll_hint or left is None:
            return {}
        if config.poll_hint_ms is not None:
            return {"openai-poll-after-ms": str(config.poll_hint_ms)}
        return {"openai-poll-after-ms": str(min(1000, max(10, math.ceil(left * 1000))))}

    # -- assistants --------------------------------------------------------------------------

    def _create_assistant(self, *, body: Any, now: float, **_: Any) -> Any:
        return render.assistant(self.store.create_assistant(body, now), self.store.flavour)

    def _get_assistant(self, assistant_id: str, **_: Any) -> Any:
        return render.assistant(self.store.get_assistant(assistant_id), self.store.flavour)

    def _modify_assistant(self, assistant_id: str, *, body: Any, **_: Any) -> Any:
        return render.assistant(self.store.modify_assistant(assistant_id, body), self.store.flavour)

    def _delete_assistant(self, assistant_id: str, **_: Any) -> Any:
        self.store.delete_assistant(assistant_id)
        return {"id": assistant_id, "object": "assistant.deleted", "deleted": True}

    def _list_models(self, **_: Any) -> Any:
        """The one model the emulator plays (readiness probes call this)."""
        return {"object": "list", "data": [{"id": "emulator", "object": "model", "created": 0,
                                            "owned_by": "assistant-worker"}]}

    def _retrieve_model(self, model: str, **_: Any) -> Any:
        """A model the emulator knows (config `models`), as start-up probes ask for it."""
        if model not in self.store.config.models:
            raise ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                           code="model_not_found")
        return {"id": model, "object": "model", "created": 0, "owned_by": "assistant-worker"}

    def _list_assistants(self, *, query: Any, **_: Any) -> Any:
        items, more = self.store.list_assistants(query)
        return render.page(items, more, render.assistant, self.store.flavour)

    # -- threads and messages ----------------------------------------------------------------

    def _create_thread(self, *, body: Any, now: float, **_: Any) -> Any:
        return render.thread(self.store.create_thread(body, now), self.store.flavour)

    def _get_thread(self, thread_id: str, *, now: float, **_: Any) -> Any:
        return render.thread(self.store.get_thread(thread_id, now), self.store.flavour)

    def _delete_thread(self, thread_id: str, *, now: float, **_: Any) -> Any:
        self.store.delete_thread(thread_id, now)
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    def _create_message(self, thread_id: str, *, body: Any, now: float, **_: Any) -> Any:
        return render.message(self.store.create_message(thread_id, body, now), self.store.flavour)

    def _get_message(self, thread_id: str, message_id: str, *, now: float, **_: Any) -> Any:
        return render.message(self.store.get_message(thread_id, message_id, now), self.store.flavour)

    def _list_messages(self, thread_id: str, *, query: Any, now: float, **_: Any) -> Any:
        items, more = self.store.list_messages(thread_id, query, now)
        return render.page(items, more, render.message, self.store.flavour)

    # -- runs and steps ----------------------------------------------------------------------

    def _create_run(self, thread_id: str, *, body: Any, now: float, **_: Any) -> Any:
        return self.store.create_run(thread_id, body, now)

    def _create_thread_and_run(self, *, body: Any, now: float, **_: Any) -> Any:
        return self.store.create_thread_and_run(body, now)

    def _get_run(self, thread_id: str, run_id: str, *, now: float, **_: Any) -> Any:
        return self.store.get_run(thread_id, run_id, now, poll=True)

    def _list_runs(self, thread_id: str, *, query: Any, now: float, **_: Any) -> Any:
        items, more = self.store.list_runs(thread_id, query, now)
        return render.page(items, more, render.run, self.store.flavour)

    def _cancel_run(self, thread_id: str, run_id: str, *, now: float, **_: Any) -> Any:
        return self.store.cancel_run(thread_id, run_id, now)

    def _submit_tool_ouputs_to_run(self, thread_id: str, run_id: str, *, body: Any, now: float, **_: Any) -> Any:
        return self.store.submit_tool_outputs(thread_id, run_id, body, now)

    def _list_run_steps(self, thread_id: str, run_id: str, *, query: Any, now: float, **_: Any) -> Any:
        items, more = self.store.list_steps(thread_id, run_id, query, now)
        return render.page(items, more, render.step, self.store.flavour)

    def _get_run_step(self, thread_id: str, run_id: str, step_id: str, *, now: float, **_: Any) -> Any:
        return render.step(self.store.get_step(thread_id, run_id, step_id, now), self.store.flavour)

    # -- conversations and responses ---------------------------------------------------------

    def _create_conversation(self, *, body: Any, now: float, **_: Any) -> Any:
        return render.conversation(self.store.conversations.create_conversation(body, now), self.store.flavour)

    def _get_conversation(self, conversation_id: str, *, now: float, **_: Any) -> Any:
        return render.conversation(self.store.conversations.get_conversation(conversation_id, now),
                                   self.store.flavour)

    def _list_conversation_items(self, conversation_id: str, *, query: Any, now: float, **_: Any) -> Any:
        items, more = self.store.conversations.list_items(conversation_id, query, now)
        return render.page(items, more, render.item, self.store.flavour)

    def _create_conversation_items(self, conversation_id: str, *, body: Any, now: float, **_: Any) -> Any:
        items = self.store.conversations.create_items(conversation_id, body, now)
        return render.page(items, False, render.item, self.store.flavour)

    def _delete_conversation(self, conversation_id: str, *, now: float, **_: Any) -> Any:
        self.store.conversations.delete_conversation(conversation_id, now)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    def _get_conversation_item(self, conversation_id: str, item_id: str, *, now: float, **_: Any) -> Any:
        return render.item(self.store.conversations.get_item(conversation_id, item_id, now), self.store.flavour)

    def _delete_conversation_item(self, conversation_id: str, item_id: str, *, now: float, **_: Any) -> Any:
        conversation = self.store.conversations.delete_item(conversation_id, item_id, now)
        return render.conversation(conversation, self.store.flavour)

    def _create_response(self, *, body: Any, now: float, **_: Any) -> Any:
        return self.store.conversations.create_response(body, now)

    def _list_responses(self, *, query: Any, now: float, **_: Any) -> Any:
        if not self.store.config.list_responses:  # as OpenAI answers any unknown route
            raise ApiError(404, "Invalid URL (GET /v1/responses)")
        responses, more = self.store.conversations.list_responses(query, now)
        return render.page(responses, more, render.response, self.store.flavour)

    def _get_response(self, response_id: str, *, now: float, **_: Any) -> Any:
        return self.store.conversations.get_response(response_id, now, poll=True)

    def _cancel_response(self, response_id: str, *, now: float, **_: Any) -> Any:
        return self.store.conversations.cancel_response(response_id, now)
