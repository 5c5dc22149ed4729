"""Assistants v2: writes through the official openai SDK (`client.beta.threads...`), reads
(run status, messages, steps, recent runs) as plain GETs with the SDK's own URL, key and
headers (worker/backends/run_reader.py), because polling makes them most of the calls.

Responses are read from their raw JSON, defensively: compatible servers differ from OpenAI
in id formats, timestamps, missing fields and content shapes, and the SDK's typed objects
sometimes misread them (a plain-string content becomes per-character parts).
The shared HTTP plumbing (SDK retries off, error translation, metrics) is in api.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import openai
import structlog

from worker.backends.api import PAGE_LIMIT, ApiCalls, ApiObserver, json_object, poll_after, run_error
from worker.backends.base import (
    ACTIVE_STATUSES,
    Appended,
    Busy,
    Capabilities,
    RunRequest,
    RunStart,
    RunState,
    Started,
    StreamTarget,
    Submitted,
    ThreadOpened,
    ToolCall,
    earlier_run,
)
from worker.backends.shapes import ShapeFailures
from worker.backends.streaming import StreamedCalls, streamed
from worker.capabilities import Capability, CapabilityStore
from worker.errors import RouteNotFoundError, ThreadBusyError
from worker.streams.events import AssistantsEvents
from worker.streams.streams import Streams

log = structlog.get_logger(__name__)


class AssistantsBackend:
    def __init__(self, client: openai.OpenAI, observe: ApiObserver | None = None,
                 known: CapabilityStore | None = None, streams: Streams | None = None) -> None:
        self.api = ApiCalls(client, observe)
        self.client = self.api.client
        self._runs = self.client.beta.threads.runs.with_raw_response
        self.known = known or CapabilityStore(None, str(client.base_url), {}, ttl_seconds=3600.0)
        self._shapes = ShapeFailures(self.api, self.known)
        self.streamed = StreamedCalls(streams, self.known)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(needs_assistant=True,
                            thread_with_first_run=self.known.supports(Capability.THREAD_AND_RUN),
                            messages_with_run=self.known.supports(Capability.MULTI_MESSAGE_RUNS),
                            lists_runs=True, tool_round_starts_run=False,
                            stream=self.streamed.available())

    # --- the interface -----------------------------------------------------------------
    def start_run(self, request: RunRequest) -> RunStart:
        """A new conversation's first run comes with its thread in one call; after an
        unknown outcome a new thread is made (the lost one is unknown: nothing of it is
        ever published). On a known thread: look for the run an earlier create made, then
        create; a thread busy with a run of ours (a lost answer) adopts it. A server that
        takes one message per request gets them one at a time first (`Appended`)."""
        multi = self.known.supports(Capability.MULTI_MESSAGE_RUNS)
        if request.thread_id is None:
            if self._one_call(request, multi):
                started = self.create_thread_and_run(request.conversation_id, request)
                if started is not None:
                    return Started(started[1], started[0])
            return ThreadOpened(self.create_thread(request.conversation_id))
        adopted = earlier_run(self, request)
        if adopted is not None:
            return adopted
        if request.append and not multi and len(request.events) - request.appended > 1:
            return self.append_next(request)
        try:
            return Started(self.create_run(request), request.thread_id)
        except ThreadBusyError:
            active = self._active_run(request.thread_id)
        if active is not None and active.metadata.get("batch_id") == request.batch_id:
            return Started(active, request.thread_id, adopted=True)
        return Busy(active)

    def _one_call(self, request: RunRequest, multi: bool) -> bool:
        return (not request.reconciling and self.known.supports(Capability.THREAD_AND_RUN)
                and (multi or len(request.events) <= 1))

    # --- the calls behind start_run ----------------------------------------------------
    def create_thread(self, conversation_id: str) -> str:
        raw = self.api.call("threads.create", True, lambda: self.client.beta.threads.with_raw_response.create(
            metadata=_thread_metadata(conversation_id)))
        return str(json_object(raw)["id"])

    def create_run(self, request: RunRequest) -> RunState:
        body = _run_body(request)
        messages = [_user_message(e) for e in request.events[request.appended:]] if request.append else []
        if messages:
            body["additional_messages"] = messages
        with self._shapes.watch(len(messages)):
            opened = self.streamed.post("runs.create", f"threads/{request.thread}/runs", body, request.stream_to,
                                        AssistantsEvents.of_create, _streamed_run)
            if opened is not None:
                return streamed(_run_state(opened.object, None), opened)
            raw = self.api.call("runs.create", True, lambda: self._runs.create(request.thread, **body))
        return _run_state(json_object(raw), raw.headers)

    def append_next(self, request: RunRequest) -> Appended:
        """The next event not on the thread yet, appended alone (tagged with its event id).
        After an unknown outcome the thread's recent messages are read for the tags first."""
        count = request.appended
        if request.reconciling:
            on_thread = self._tagged_event_ids(request.thread)
            while count < len(request.events) and request.events[count].event_id[:512] in on_thread:
                count += 1
            if count > request.appended:
                return Appended(count)
        message = _user_message(request.events[count])
        self.api.call("messages.create", True, lambda: self.client.beta.threads.messages.with_raw_response.create(
            request.thread, **message))
        return Appended(count + 1)

    def create_thread_and_run(self, conversation_id: str, request: RunRequest) -> tuple[str, RunState] | None:
        """One call instead of two for a new conversation's first run (createThreadAndRun);
        None when the server has no such route (some compatible servers): learnt, and two
        calls from then on."""
        body = _run_body(request)
        messages = [_user_message(e) for e in request.events]
        body["thread"] = {"metadata": _thread_metadata(conversation_id), "messages": messages}
        try:
            with self._shapes.watch(len(messages)):
                opened = self.streamed.post("threads.create_and_run", "threads/runs", body, request.stream_to,
                                            AssistantsEvents.of_create, _streamed_run)
                if opened is not None:
                    return str(opened.object["thread_id"]), streamed(_run_state(opened.object, None), opened)
                raw = self.api.call("threads.create_and_run", True,
                                    lambda: self.client.beta.threads.with_raw_response.create_and_run(**body))
        except RouteNotFoundError as exc:
            # An unknown route created nothing (an unknown assistant is the request's fault,
            # InvalidRequestError, and is raised).
            self.known.learn(Capability.THREAD_AND_RUN, False, f"createThreadAndRun answered {exc}")
            return None
        run = json_object(raw)
        return str(run["thread_id"]), _run_state(run, raw.headers)

    def find_run(self, request: RunRequest) -> RunState | None:
        for run in self._recent_runs(request.thread):
            meta = run.get("metadata") or {}
            if meta.get("batch_id") == request.batch_id and str(meta.get("attempt")) == str(request.attempt):
                return _run_state(run, None)
        return None

    def _active_run(self, thread_id: str) -> RunState | None:
        for run in self._recent_runs(thread_id):
            if run.get("status") in ACTIVE_STATUSES:
                return _run_state(run, None)
        return None

    def confirm_run(self, request: RunRequest, run_id: str) -> RunState:
        return self.get_run(request.thread, run_id)  # runs are found by metadata: always confirmed

    def get_run(self, thread_id: str, run_id: str) -> RunState:
        body, headers = self.api.read("runs.retrieve", f"threads/{thread_id}/runs/{run_id}")
        return _run_state(body, headers)

    def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[dict[str, str]],
                            instructions: str | None = None, stream_to: StreamTarget | None = None) -> Submitted:
        """The same run goes on (with its own instructions)."""
        path = f"threads/{thread_id}/runs/{run_id}/submit_tool_outputs"
        opened = self.streamed.post("runs.submit_tool_outputs", path, {"tool_outputs": outputs}, stream_to,
                                    AssistantsEvents, _streamed_run)
        if opened is not None:
            return Submitted(run_id, opened.owner)
        self.api.call("runs.submit_tool_outputs", True, lambda: self._runs.submit_tool_outputs(
            run_id, thread_id=thread_id, tool_outputs=outputs))  # type: ignore[arg-type]  # dicts of the SDK's TypedDict shape
        return Submitted(run_id)

    def follow_stream(self, thread_id: str, run_id: str, cursor: str | None, target: StreamTarget) -> None:
        """A run's stream cannot be re-attached: it is polled."""
        return None

    def find_submission(self, thread_id: str, run_id: str, call_ids: list[str], sent_at: float) -> None:
        """A submission that went through moves its run on at once: one still waiting for
        these outputs never received them."""
        return None

    def cancel_run(self, thread_id: str, run_id: str) -> None:
        self.api.call("runs.cancel", True, lambda: self._runs.cancel(run_id, thread_id=thread_id))

    def run_messages(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        pages = self.api.pages("messages.list", f"threads/{thread_id}/messages",
                            {"run_id": run_id, "order": "asc", "limit": PAGE_LIMIT})
        return _assistant_messages(pages)

    def run_steps(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        return [_outbound_step(step) for step in self.api.pages(
            "runs.steps.list", f"threads/{thread_id}/runs/{run_id}/steps",
            {"order": "asc", "limit": PAGE_LIMIT})]

    def copy_watch(self, request: RunRequest, run_id: str) -> dict[str, Any] | None:
        return None  # runs are listed by tag: a second one is never made unseen

    def remove_late_copies(self, thread_id: str, watch: dict[str, Any]) -> int:
        return 0

    def close(self) -> None:
        self.api.close()

    # --- plumbing --------------------------------------------------------------------
    def _tagged_event_ids(self, thread_id: str) -> set[str]:
        body, _ = self.api.read("messages.list", f"threads/{thread_id}/messages?order=desc&limit={PAGE_LIMIT}")
        return {str((m.get("metadata") or {}).get("event_id")) for m in body.get("data") or []
                if isinstance(m, dict)}

    def _recent_runs(self, thread_id: str) -> list[dict[str, Any]]:
        body, _ = self.api.read("runs.list", f"threads/{thread_id}/runs?order=desc&limit=20")
        return list(body.get("data") or [])


def _thread_metadata(conversation_id: str) -> dict[str, str]:
    return {"conversation_id": conversation_id[:512]}


def _run_body(request: RunRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "assistant_id": request.assistant_id,
        "metadata": {"batch_id": request.batch_id, "attempt": str(request.attempt)},
    }
    if request.instructions is not None:
        body["instructions"] = request.instructions
    return body


def _user_message(event: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "user",
        "content": event.content,
        "metadata": {"event_id": event.event_id[:512]},
    }
    if event.attachments:
        message["attachments"] = [a.model_dump(mode="json") for a in event.attachments]
    return message


def _streamed_run(run: dict[str, Any], messages: list[dict[str, Any]] | None) -> RunState:
    state = _run_state(run, None)
    if messages is None or not state.terminal:
        return state
    return dataclasses.replace(state, messages=_assistant_messages(messages))


def _assistant_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's messages as the outbound entry has them (some servers tag the run's
    additional user messages with its run id too: those are left out)."""
    return [_outbound_message(m) for m in messages if m.get("role", "assistant") == "assistant"]


def _run_state(run: dict[str, Any], headers: Any) -> RunState:
    status = str(run.get("status") or "queued")
    error = run_error(run.get("last_error"), status, run.get("incomplete_details"), "run")
    return RunState(
        id=str(run["id"]),
        status=status,
        tool_calls=_tool_calls(run),
        error=error,
        usage=run.get("usage") if isinstance(run.get("usage"), dict) else None,
        expires_at=_number(run.get("expires_at")),
        poll_after_ms=poll_after(headers),
        metadata={str(k): str(v) for k, v in (run.get("metadata") or {}).items()},
    )


def _tool_calls(run: dict[str, Any]) -> list[ToolCall]:
    action = run.get("required_action") or {}
    calls = (action.get("submit_tool_outputs") or {}).get("tool_calls") or []
    out = []
    for call in calls:
        function = call.get("function") or {}
        out.append(ToolCall(id=str(call["id"]), name=str(function.get("name") or ""),
                            arguments=str(function.get("arguments") or "{}")))
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _outbound_message(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    texts: list[str] = []
    annotations: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    for part in content if isinstance(content, list) else []:
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if isinstance(text, dict):
                texts.append(str(text.get("value") or ""))
                annotations.extend(a for a in text.get("annotations") or [] if isinstance(a, dict))
            elif isinstance(text, str):
                texts.append(text)
        elif kind == "image_file":
            file_id = (part.get("image_file") or {}).get("file_id")
            annotations.append({"type": "image_file", "file_id": file_id})
    return {
        "id": str(message.get("id")),
        "role": str(message.get("role") or "assistant"),
        "text": "\n".join(texts),
        "annotations": annotations,
        "created_at": message.get("created_at"),
    }


def _outbound_step(step: dict[str, Any]) -> dict[str, Any]:
    details = step.get("step_details") or {}
    calls = []
    for call in details.get("tool_calls") or []:
        kind = str(call.get("type") or "")
        name = (call.get("function") or {}).get("name") if kind == "function" else kind
        calls.append({"type": kind, "name": name})
    return {"type": str(step.get("type") or ""), "status": str(step.get("status") or ""),
            "tool_calls": calls}
