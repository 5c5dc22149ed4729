"""The HTTP plumbing both backends share: SDK calls for writes, plain GETs for reads, with
OpenAI's error semantics translated to the worker's errors and every request counted.

The SDK's own retries are off: a retried POST whose first answer was lost would act
twice. Retries are the caller's, with reconciliation (`find_run`).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import openai

from worker.backends.run_reader import ConnectionProblem, RunReader
from worker.errors import (
    INVALID_REQUEST,
    InvalidRequestError,
    PermanentApiError,
    RequestRefusedError,
    RouteNotFoundError,
    ThreadBusyError,
    ThreadNotFoundError,
    TransientApiError,
)

PAGE_LIMIT = 100
ApiObserver = Callable[[str, str], None]  # (operation, outcome) -> None, for metrics


class ApiCalls:
    """One API client's calls: `call` (through the SDK), `read` and `pages` (plain GETs)."""

    def __init__(self, client: openai.OpenAI, observe: ApiObserver | None = None) -> None:
        self.client = client.with_options(max_retries=0)
        self._observe = observe or (lambda operation, outcome: None)
        self._reader = RunReader(self.client)
        self.ok_calls = 0  # calls answered without error (is the server up?)

    def close(self) -> None:
        self._reader.close()
        self.client.close()

    def pages(self, operation: str, path: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params = dict(query)
        while True:
            page, _ = self.read(operation, f"{path}?{urllib.parse.urlencode(params)}")
            data = list(page.get("data") or [])
            items.extend(data)
            if not page.get("has_more") or not data:
                return items
            params["after"] = str(page.get("last_id") or data[-1]["id"])

    def read(self, operation: str, path: str) -> tuple[dict[str, Any], Any]:
        """One GET through the run reader, with the SDK's error semantics."""
        try:
            status, headers, body = self._reader.get(path)
        except ConnectionProblem as exc:
            self._observe(operation, "connection_error")
            raise TransientApiError(f"{operation}: {exc}") from None
        if status >= 400 or not isinstance(body, dict):
            self._observe(operation, status_outcome(status) if status >= 400 else "client_error")
            raise translate(status, body, headers, is_post=False)
        self._observe(operation, "ok")
        self.ok_calls += 1
        return body, headers

    def call(self, operation: str, is_post: bool, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except openai.APIStatusError as exc:
            self._observe(operation, status_outcome(exc.status_code))
            raise translate(exc.status_code, exc.body, exc.response.headers, is_post,
                            fallback=str(exc)) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            self._observe(operation, "timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error")
            raise TransientApiError(f"{operation}: {exc}", maybe_applied=is_post) from None
        self._observe(operation, "ok")
        self.ok_calls += 1
        return result


def status_outcome(status: int) -> str:
    if status == 429:
        return "rate_limited"
    return "server_error" if status >= 500 else "client_error"


def translate(status: int, body: Any, headers: Any, is_post: bool, fallback: str = "") -> Exception:
    """An HTTP error status as a worker error: transient, busy thread, or permanent (whose
    kind says whose fault it is: the event's, the deployment's, a missing route, a lost thread)."""
    message = _body_field(body, "message") or fallback or f"HTTP {status}"
    code = _body_field(body, "code")
    if status in (401, 403):  # the deployment's key: no retry changes the answer
        default = "invalid_api_key" if status == 401 else "permission_denied"
        return PermanentApiError(message, code=code or default, status=status)
    if status == 429 or status >= 500 or status == 408:
        return TransientApiError(message, retry_after=_retry_after(headers),
                                 maybe_applied=is_post and status >= 500, status=status)
    lowered = message.lower()
    busy = "active run" in lowered or "while a run" in lowered or code == "conversation_locked"
    if status in (400, 409) and busy:
        return ThreadBusyError(message, status=status)
    if status == 409:
        return TransientApiError(message, status=status)
    if status in (404, 405):
        return _not_found(status, body, message, code)
    if _body_field(body, "param") == "assistant_id" or "no assistant found" in lowered:
        return InvalidRequestError(f"unknown assistant: {message}", code="invalid_event", status=status)
    if _about_the_worker_s_fields(body, code, message):
        return RequestRefusedError(message, code=code or INVALID_REQUEST, status=status)
    return InvalidRequestError(message, code=code or INVALID_REQUEST, status=status,
                               event_index=_message_index(_body_field(body, "param")))


# Where a request's user messages are, by the field the API names ("additional_messages[2].content").
_MESSAGE_PARAM = re.compile(r"^(?:additional_messages|thread\.messages|messages|input)\[(\d+)\]")


def _message_index(param: str) -> int | None:
    found = _MESSAGE_PARAM.match(param)
    return int(found.group(1)) if found else None


# The fields of a request the worker sets itself (never from an event): a 400 about one of
# them is the deployment's fault, not the event's.
WORKER_FIELDS = frozenset({"model", "tools", "tool_choice", "parallel_tool_calls", "metadata", "stream",
                           "background", "store", "previous_response_id", "conversation", "truncation_strategy",
                           "response_format", "thread.metadata"})
# The object a 404's message is about: the first one it names ("No thread found with id 'x'.",
# "Conversation with id 'x' not found.", "Item with id 'x' not found in conversation 'y'.").
_NAMED_OBJECT = re.compile(r"\b(thread|conversation|assistant|run|message|item|response|step|file|model)s?\b",
                           re.IGNORECASE)
_QUOTED_ID = re.compile(r"'([^'\s]+)'")


def _not_found(status: int, body: Any, message: str, code: str) -> PermanentApiError:
    """A 404 (405): a route the server lacks when it is not the API's JSON error or says
    `Invalid URL`; else the object its message names is unknown."""
    if status == 405 or not _is_api_error(body) or message.startswith("Invalid URL"):
        return RouteNotFoundError(message, status=status)
    named = _NAMED_OBJECT.search(message)
    kind = named.group(1).lower() if named else ""
    if kind == "assistant":
        return InvalidRequestError(f"unknown assistant: {message}", code="invalid_event", status=status)
    if kind in ("thread", "conversation"):
        quoted = _QUOTED_ID.search(message)
        return ThreadNotFoundError(message, thread_id=quoted.group(1) if quoted else None, status=status)
    return PermanentApiError(message, code=code or "not_found", status=status)


def _about_the_worker_s_fields(body: Any, code: str, message: str) -> bool:
    if code == "unknown_parameter" or message.startswith("Unrecognized request argument"):
        return True  # the server does not take a field the worker sends
    path = re.sub(r"\[\d+\]", "", _body_field(body, "param"))
    return path in WORKER_FIELDS or path.split(".")[0] in WORKER_FIELDS


def _is_api_error(body: Any) -> bool:
    """OpenAI's error body, `{"error": {...}}` (or a compatible server's `{"error": "..."}`),
    or the object inside it (what the SDK keeps of it)."""
    if not isinstance(body, dict):
        return False
    return isinstance(body.get("error"), dict | str) or ("message" in body and ("type" in body or "code" in body))


def _body_field(body: Any, name: str) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, str) and name == "message":
            return inner
        if isinstance(inner, dict) and inner.get(name):
            return str(inner[name])
    return ""


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def json_object(raw: Any) -> dict[str, Any]:
    """The JSON object of an SDK raw response."""
    data = json.loads(raw.text)
    if not isinstance(data, dict):
        raise TransientApiError("the API answered with something that is not a JSON object")
    return data


def run_error(error: Any, status: str, incomplete_details: Any, what: str) -> dict[str, str] | None:
    """The outbound error of a run (Assistants `last_error`) or a response (`error`)."""
    if isinstance(error, dict):
        return {"code": str(error.get("code") or "server_error"), "message": str(error.get("message") or "")}
    if status == "incomplete":
        reason = (incomplete_details or {}).get("reason") or "incomplete"
        return {"code": str(reason), "message": f"the {what} ended incomplete: {reason}"}
    return None


def poll_after(headers: Any) -> int | None:
    value = headers.get("openai-poll-after-ms") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
