"""The /v1 operations: URL routing table and one handler per OpenAI operationId."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import lifecycle, render
from .objects import Run
from .store import Store

# (method, path under /v1 with "*" for an id, operationId as in the OpenAPI spec)
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "assistants", "listAssistants"),
    ("POST", "assistants", "createAssistant"),
    ("GET", "assistants/*", "getAssistant"),
    ("POST", "assistants/*", "modifyAssistant"),
    ("DELETE", "assistants/*", "deleteAssistant"),
    ("POST", "threads", "createThread"),
    ("GET", "threads/*", "getThread"),
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
)
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
                return Response(200, render.run(result, store.flavour), self._poll_hint(result, now))
            return Response(200, result)

    def _poll_hint(self, run: Run, now: float) -> dict[str, str]:
        config = self.store.config
        left = lifecycle.time_left(run, now)
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

    def _list_assistants(self, *, query: Any, **_: Any) -> Any:
        items, more = self.store.list_assistants(query)
        return render.page(items, more, render.assistant, self.store.flavour)

    # -- threads and messages ----------------------------------------------------------------

    def _create_thread(self, *, body: Any, now: float, **_: Any) -> Any:
        return render.thread(self.store.create_thread(body, now), self.store.flavour)

    def _get_thread(self, thread_id: str, *, now: float, **_: Any) -> Any:
        return render.thread(self.store.get_thread(thread_id, now), self.store.flavour)

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
