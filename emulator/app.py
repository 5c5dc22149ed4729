"""The request pipeline, free of HTTP plumbing: admin endpoints, auth, faults, the /v1 operations, counters."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from . import api
from .api import Api, Response
from .config import ConfigError, EmulatorConfig
from .errors import ApiError
from .faults import LOST, FaultInjector
from .hub import StreamHub
from .objects import ModelResponse, Run
from .quirks import Quirks
from .sse import StreamResponse
from .store import Store

ADMIN_PREFIX = "/_emulator/"
STREAM_OPS = frozenset({"createRun", "createThreadAndRun", "submitToolOuputsToRun", "createResponse"})
CANCEL_OPS = frozenset({"cancelRun", "cancelResponse"})
_NO_KEY = ("You didn't provide an API key. You need to provide your API key in an Authorization header "
           "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")


class App:
    def __init__(self, config: EmulatorConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or EmulatorConfig()
        self.store = Store(self.config, clock)
        self.api = Api(self.store)
        self.faults = FaultInjector(self.config)
        self.quirks = Quirks(self.config, clock)
        self.streams = StreamHub(clock, self.config.seed)
        self._lock = threading.Lock()
        self._config_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()

    def handle(self, method: str, target: str, authorization: str | None, body: bytes) -> Response | StreamResponse:
        """Answer one request: `target` is the path and query, `authorization` the header's value."""
        path, _, query_string = target.partition("?")
        response: Response | StreamResponse
        if path.startswith(ADMIN_PREFIX):
            response = self._admin(method, path[len(ADMIN_PREFIX):].strip("/"), body)
        else:
            response = self._v1(method, path, query_string, authorization, body)
        with self._lock:
            self.responses[str(response.status)] += 1
        return response

    # -- runtime control ---------------------------------------------------------------------

    def configure(self, **changes: Any) -> EmulatorConfig:
        with self._config_lock:
            config = self.config.replace(**changes)
            with self.store.lock:
                self.store.reconfigure(config)
            self.faults.reconfigure(config)
            self.quirks.reconfigure(config, changes)
            if config.seed != self.config.seed:
                self.streams.reseed(config.seed)
            self.config = config
        return config

    def reset(self) -> None:
        with self.store.lock:
            self.store.reset()
        self.faults.reset()
        self.quirks.reset()
        self.streams.reset()
        with self._lock:
            self.calls.clear()
            self.responses.clear()

    def stats(self) -> dict[str, Any]:
        store = self.store
        with store.lock:
            store.settle_all(store.clock())
            runs = store.run_counts()
            model_responses = store.conversations.counts()
            sizes = {"assistants": len(store.assistants), "threads": len(store.threads),
                     "messages": len(store.messages), "conversations": len(store.conversations.conversations),
                     "conversation_items": len(store.conversations.items),
                     "responses": len(store.conversations.responses)}
        with self._lock:
            calls, responses = dict(self.calls), dict(self.responses)
        window = self.quirks.window()
        return {"calls": calls, "responses": responses, "runs": runs, "model_responses": model_responses,
                "objects": sizes, "faults_injected": {**self.faults.counts(), "quirks": self.quirks.counts()},
                "outage": None if window is None else {"from": window[0], "until": window[1],
                                                       "active": window[0] <= store.clock() < window[1]}}

    def stream_log(self) -> list[dict[str, Any]]:
        """When each text delta and each ending event of a stream was written (see README.md)."""
        return self.streams.log()

    def unanswered(self, target: str) -> bool:
        """Whether this request gets no answer at all (the outage window; never an admin endpoint)."""
        return not target.startswith(ADMIN_PREFIX) and self.quirks.unreachable()

    def runs(self) -> list[dict[str, Any]]:
        """Every run, then every response (Responses API), with the same fields; thread_id = conversation id."""
        store = self.store
        with store.lock:
            store.settle_all(store.clock())
            records: list[Run | ModelResponse] = [*store.runs.values(), *store.conversations.responses.values()]
            return [
                {"id": record.id, "object": "response" if isinstance(record, ModelResponse) else "thread.run",
                 "thread_id": record.thread_id, "status": record.status, "created_at": record.created_at,
                 "started_at": record.started_at, "finished_at": record.finished_at, "polls": record.polls,
                 "last_polled_at": record.last_polled_at,
                 "history": [[status, at] for status, at in record.history]}
                for record in records
            ]

    # -- pipeline ----------------------------------------------------------------------------

    def _v1(self, method: str, path: str, query_string: str, authorization: str | None,
            body: bytes) -> Response | StreamResponse:
        parts = path.strip("/").split("/")
        route = api.match(method, parts[1:]) if parts[0] == "v1" else None
        if route is None:
            return _error(ApiError(404, f"Invalid URL ({method} {path})"))
        op, ids = route
        with self._lock:
            self.calls[op] += 1
        if not _authorized(authorization):
            return _error(ApiError(401, _NO_KEY))
        if _token(authorization) in self.config.rejected_keys:
            return _error(ApiError(401, f"Incorrect API key provided: {_token(authorization)[:6]}****. You can "
                                   "find your API key at https://platform.openai.com/account/api-keys.",
                                   code="invalid_api_key"))
        try:
            payload = _json_body(body)
        except ApiError as exc:
            return _error(exc)
        # The server's own habit, before any random fault (on a route the flavour offers).
        offered = op != "createThreadAndRun" or self.store.flavour.thread_and_run
        refusal = self.quirks.refuse(op, payload) if offered else None
        if refusal is not None:
            return _error(refusal)
        fault = self.faults.draw(op)
        if fault is not None and fault != LOST:
            return _error(self.faults.error(fault))
        query = dict(parse_qsl(query_string))
        response: Response | StreamResponse
        gone = self._runs_of(ids[-1]) if op == "deleteThread" else []
        try:
            if self._streamed(op, payload, query):
                source = self.api.stream(op, ids, query, payload)
                response = StreamResponse(source)
            else:
                response = self.api.call(op, ids, query, payload)
        except ApiError as exc:
            response = _error(exc)
        if op in CANCEL_OPS and response.status == 200:
            self.streams.poke(ids[-1])  # an open stream of it ends with the cancel
        if gone and response.status == 200:  # the runs went with their thread: so do their streams
            for run_id in gone:
                self.streams.cut(run_id)
        return _error(self.faults.error(fault)) if fault == LOST else response

    def _runs_of(self, thread_id: str) -> list[str]:
        with self.store.lock:
            thread = self.store.threads.get(thread_id)
            return [run.id for run in thread.runs] if thread is not None else []

    def _streamed(self, op: str, payload: dict[str, Any], query: dict[str, str]) -> bool:
        """Whether to answer with a stream; the `stream_refuse` switch plays servers that do not."""
        if op in STREAM_OPS:
            wanted = payload.get("stream") is True
        else:
            wanted = op == "getResponse" and query.get("stream", "").lower() == "true"
        mode = self.config.stream_refuse
        if not wanted or mode == "json":  # "json": `stream` ignored, the plain answer
            return False
        if mode == "error":
            raise ApiError(400, "Unsupported parameter: 'stream' is not supported with this model.", param="stream",
                           code="unsupported_parameter")
        if mode == "resume" and op == "getResponse" and "starting_after" in query:
            raise ApiError(400, "Unsupported parameter: 'starting_after' is not supported: a stream cannot be "
                                "resumed.", param="starting_after", code="unsupported_parameter")
        return True

    def _admin(self, method: str, name: str, body: bytes) -> Response:
        endpoints: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "stats"): self.stats,
            ("GET", "runs"): self.runs,
            ("GET", "stream_log"): self.stream_log,
            ("GET", "config"): self.config.as_dict,
            ("POST", "config"): lambda: self.configure(**_json_body(body)).as_dict(),
            ("POST", "reset"): self._admin_reset,
            ("GET", "health"): lambda: {"ok": True},
        }
        endpoint = endpoints.get((method, name))
        if endpoint is None:
            return _error(ApiError(404, f"Invalid URL ({method} {ADMIN_PREFIX}{name})"))
        try:
            return Response(200, endpoint())
        except ConfigError as exc:
            return _error(ApiError(400, str(exc)))
        except ApiError as exc:
            return _error(exc)

    def _admin_reset(self) -> dict[str, bool]:
        self.reset()
        return {"ok": True}


def _authorized(header: str | None) -> bool:
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _token(header: str | None) -> str:
    return (header or "").partition(" ")[2].strip()


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except ValueError:
        raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                            "aren't using your HTTP library correctly.)") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return payload


def _error(exc: ApiError) -> Response:
    return Response(exc.status, exc.body(), exc.headers)
