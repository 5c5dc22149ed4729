"""Assistants v2: writes through the official openai SDK (`client.beta.threads...`), reads
(run status, messages, steps, recent runs) as plain GETs with the SDK's own URL, key and
headers (worker/backends/run_reader.py), because polling makes them most of the calls.

Responses are read from their raw JSON, defensively: compatible servers differ from OpenAI
in id formats, timestamps, missing fields and content shapes, and the SDK's typed objects
sometimes misread them (a plain-string content becomes per-character parts).
The SDK's own retries are off: a retried POST whose first answer was lost would append
twice. Retries are the caller's, with reconciliation (`find_run`).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import openai

from worker.backends.base import ACTIVE_STATUSES, RunRequest, RunState, ToolCall
from worker.backends.run_reader import ConnectionProblem, RunReader
from worker.errors import (
    InvalidRequestError,
    PermanentApiError,
    ThreadBusyError,
    TransientApiError,
)

PAGE_LIMIT = 100
ApiObserver = Callable[[str, str], None]  # (operation, outcome) -> None, for metrics


class AssistantsBackend:
    def __init__(self, client: openai.OpenAI, observe: ApiObserver | None = None) -> None:
        self.client = client.with_options(max_retries=0)
        self._observe = observe or (lambda operation, outcome: None)
        self._runs = self.client.beta.threads.runs.with_raw_response
        self._reader = RunReader(self.client)

    # --- operations ------------------------------------------------------------------
    def create_thread(self, conversation_id: str) -> str:
        raw = self._call("threads.create", True, lambda: self.client.beta.threads.with_raw_response.create(
            metadata={"conversation_id": conversation_id[:512]}))
        return str(_json(raw)["id"])

    def create_run(self, request: RunRequest) -> RunState:
        body: dict[str, Any] = {
            "assistant_id": request.assistant_id,
            "metadata": {"batch_id": request.batch_id, "attempt": str(request.attempt)},
        }
        if request.instructions is not None:
            body["instructions"] = request.instructions
        if request.events:
            body["additional_messages"] = [_user_message(e) for e in request.events]
        raw = self._call("runs.create", True, lambda: self._runs.create(request.thread_id, **body))
        return _run_state(_json(raw), raw.headers)

    def find_run(self, thread_id: str, batch_id: str, attempt: int) -> RunState | None:
        for run in self._recent_runs(thread_id):
            meta = run.get("metadata") or {}
            if meta.get("batch_id") == batch_id and str(meta.get("attempt")) == str(attempt):
                return _run_state(run, None)
        return None

    def active_run(self, thread_id: str) -> RunState | None:
        for run in self._recent_runs(thread_id):
            if run.get("status") in ACTIVE_STATUSES:
                return _run_state(run, None)
        return None

    def get_run(self, thread_id: str, run_id: str) -> RunState:
        body, headers = self._read("runs.retrieve", f"threads/{thread_id}/runs/{run_id}")
        return _run_state(body, headers)

    def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[dict[str, str]]) -> None:
        self._call("runs.submit_tool_outputs", True, lambda: self._runs.submit_tool_outputs(
            run_id, thread_id=thread_id, tool_outputs=outputs))  # type: ignore[arg-type]

    def cancel_run(self, thread_id: str, run_id: str) -> None:
        self._call("runs.cancel", True, lambda: self._runs.cancel(run_id, thread_id=thread_id))

    def run_messages(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        pages = self._pages("messages.list", f"threads/{thread_id}/messages",
                            {"run_id": run_id, "order": "asc", "limit": PAGE_LIMIT})
        # Some servers tag the run's additional (user) messages with its run id too.
        return [_outbound_message(m) for m in pages if m.get("role", "assistant") == "assistant"]

    def run_steps(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        return [_outbound_step(step) for step in self._pages(
            "runs.steps.list", f"threads/{thread_id}/runs/{run_id}/steps",
            {"order": "asc", "limit": PAGE_LIMIT})]

    def close(self) -> None:
        self._reader.close()
        self.client.close()

    # --- plumbing --------------------------------------------------------------------
    def _recent_runs(self, thread_id: str) -> list[dict[str, Any]]:
        body, _ = self._read("runs.list", f"threads/{thread_id}/runs?order=desc&limit=20")
        return list(body.get("data") or [])

    def _pages(self, operation: str, path: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params = dict(query)
        while True:
            page, _ = self._read(operation, f"{path}?{urllib.parse.urlencode(params)}")
            data = list(page.get("data") or [])
            items.extend(data)
            if not page.get("has_more") or not data:
                return items
            params["after"] = str(page.get("last_id") or data[-1]["id"])

    def _read(self, operation: str, path: str) -> tuple[dict[str, Any], Any]:
        """One GET through the run reader, with the SDK's error semantics."""
        try:
            status, headers, body = self._reader.get(path)
        except ConnectionProblem as exc:  # type: ignore[misc]
            self._observe(operation, "connection_error")
            raise TransientApiError(f"{operation}: {exc}") from None
        if status >= 400 or not isinstance(body, dict):
            self._observe(operation, _outcome(status) if status >= 400 else "client_error")
            raise _translate(status, _body_message(body, status), headers, is_post=False)
        self._observe(operation, "ok")
        return body, headers

    def _call(self, operation: str, is_post: bool, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except openai.APIStatusError as exc:
            self._observe(operation, _outcome(exc.status_code))
            raise _translate_status(exc, is_post) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            self._observe(operation, "timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error")
            raise TransientApiError(f"{operation}: {exc}", maybe_applied=is_post) from None
        self._observe(operation, "ok")
        return result


def _outcome(status: int) -> str:
    if status == 429:
        return "rate_limited"
    return "server_error" if status >= 500 else "client_error"


def _translate_status(exc: openai.APIStatusError, is_post: bool) -> Exception:
    return _translate(exc.status_code, _body_message(exc.body, exc.status_code) or str(exc),
                      exc.response.headers, is_post)


def _translate(status: int, message: str, headers: Any, is_post: bool) -> Exception:
    """An HTTP error status as a worker error: transient, busy thread, or permanent."""
    if status == 429 or status >= 500 or status in (401, 403, 408):
        return TransientApiError(message, retry_after=_retry_after(headers),
                                 maybe_applied=is_post and status >= 500, status=status)
    lowered = message.lower()
    if status in (400, 409) and ("active run" in lowered or "while a run" in lowered):
        return ThreadBusyError(message, status=status)
    if status == 409:
        return TransientApiError(message, status=status)
    if status == 404 and "assistant" in lowered:
        return InvalidRequestError(f"unknown assistant: {message}", code="invalid_event", status=status)
    if status == 404:
        return PermanentApiError(message, code="not_found", status=status)
    return InvalidRequestError(message, code="invalid_event", status=status)


def _body_message(body: Any, status: int) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return f"HTTP {status}"


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def _json(raw: Any) -> dict[str, Any]:
    data = json.loads(raw.text)
    if not isinstance(data, dict):
        raise TransientApiError("the API answered with something that is not a JSON object")
    return data


def _user_message(event: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "user",
        "content": event.content,
        "metadata": {"event_id": event.event_id[:512]},
    }
    if event.attachments:
        message["attachments"] = [a.model_dump(mode="json") for a in event.attachments]
    return message


def _run_state(run: dict[str, Any], headers: Any) -> RunState:
    status = str(run.get("status") or "queued")
    error = None
    if isinstance(run.get("last_error"), dict):
        err = run["last_error"]
        error = {"code": str(err.get("code") or "server_error"), "message": str(err.get("message") or "")}
    elif status == "incomplete":
        reason = (run.get("incomplete_details") or {}).get("reason") or "incomplete"
        error = {"code": str(reason), "message": f"the run ended incomplete: {reason}"}
    return RunState(
        id=str(run["id"]),
        status=status,
        tool_calls=_tool_calls(run),
        error=error,
        usage=run.get("usage") if isinstance(run.get("usage"), dict) else None,
        expires_at=_number(run.get("expires_at")),
        poll_after_ms=_poll_after(headers),
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


def _poll_after(headers: Any) -> int | None:
    value = headers.get("openai-poll-after-ms") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


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
