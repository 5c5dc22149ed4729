"""An in-process backend for unit tests: threads and runs in memory, played out on the
test's clock by the emulator's own deterministic model (emulator/model.py), so that the same
messages do the same things here as on the emulator (`call:add{...}`, `sleep:5`,
`fail:server_error`, ...).

It keeps the backend contract (worker/backends/base.py); tests/contract/ runs the same
suite against it and both real backends, so that it cannot drift from them.

Faults: `fail_next(method, error, applied=...)` makes the next call of `method` raise
`error`, after doing its work when `applied` (a lost answer) or without it. The API's own
refusals are played as the real API answers them: a message longer than `max_content_chars`
(InvalidRequestError, `string_above_max_length`), a thread `lose_thread` deleted
(ThreadNotFoundError, for every call naming it or one of its runs).

`down = True` is an outage: every call fails as a reset connection would, doing nothing.
`observe`, when set, sees each call's outcome as the real backends' observe hook does
(`ok`, `client_error`, `rate_limited`, `server_error`, `connection_error`).

`unlocked=True` plays a Responses server that neither locks a thread while a run works nor
lists runs: a run's user messages and replies reach the thread together when it ends, a run
is found only then, an earlier create not found is `Unseen` (until `repeat_ok`), and a late
copy of a batch's messages can be removed (`remove_late_copies`).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emulator.model import Plan, plan_run, tool_results_reply
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
    Unseen,
)
from worker.errors import (
    InvalidRequestError,
    PermanentApiError,
    ThreadBusyError,
    ThreadNotFoundError,
    TransientApiError,
)

KNOWN_ASSISTANT = "asst_default"


@dataclass
class FakeRun:
    id: str
    thread_id: str
    plan: Plan
    created_at: float
    duration: float
    metadata: dict[str, str]
    texts: list[str]
    status: str = "queued"
    tool_calls: list[ToolCall] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    shown: bool = False  # unlocked: its user messages reached the thread


@dataclass
class FakeThread:
    id: str
    conversation_id: str
    messages: list[tuple[str, str, str | None]] = field(default_factory=list)  # role, text, run id
    runs: list[str] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)  # user messages appended alone, by their tag


class FakeBackend:
    def __init__(self, clock: Callable[[], float], *, run_seconds: float = 1.0,
                 capabilities: Capabilities | None = None, max_content_chars: int = 256_000,
                 unlocked: bool = False) -> None:
        self.clock = clock
        self.run_seconds = run_seconds
        self.max_content_chars = max_content_chars
        self.unlocked = unlocked
        self._capabilities = capabilities or Capabilities(
            needs_assistant=True, thread_with_first_run=True, messages_with_run=True,
            lists_runs=not unlocked, tool_round_starts_run=False, leaves_late_copies=unlocked)
        self.threads: dict[str, FakeThread] = {}
        self.runs: dict[str, FakeRun] = {}
        self.calls: list[str] = []  # every call, by method name
        self._ids = itertools.count(1)
        self._faults: dict[str, deque[tuple[Exception, bool]]] = {}
        self._replies: dict[str, deque[Any]] = {}
        self.observe: Callable[[str, str], None] | None = None
        self.down = False

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # --- faults --------------------------------------------------------------------------
    def fail_next(self, method: str, error: Exception, *, applied: bool = False, times: int = 1) -> None:
        for _ in range(times):
            self._faults.setdefault(method, deque()).append((error, applied))

    def reply_next(self, method: str, value: Any) -> None:
        """The next call of `method` returns `value` (nothing else happens)."""
        self._replies.setdefault(method, deque()).append(value)

    def _call(self, method: str, work: Callable[[], Any]) -> Any:
        try:
            result = self._answer(method, work)
        except Exception as exc:
            if self.observe is not None:
                self.observe(method, _outcome(exc))
            raise
        if self.observe is not None:
            self.observe(method, "ok")
        return result

    def _answer(self, method: str, work: Callable[[], Any]) -> Any:
        self.calls.append(method)
        if self.down:
            raise TransientApiError(f"{method}: Connection error (the API is down)")
        replies = self._replies.get(method)
        if replies:
            return replies.popleft()
        faults = self._faults.get(method)
        if faults:
            error, applied = faults.popleft()
            if applied:
                work()
            raise error
        return work()

    # --- the interface -------------------------------------------------------------------
    def start_run(self, request: RunRequest) -> RunStart:
        result: RunStart = self._call("start_run", lambda: self._start(request))
        return result

    def _start(self, request: RunRequest) -> RunStart:
        if self._capabilities.needs_assistant and request.assistant_id != KNOWN_ASSISTANT:
            raise InvalidRequestError(f"No assistant found with id '{request.assistant_id}'.", code="invalid_event")
        self._check_lengths(request)
        if request.thread_id is None:
            thread = self._new_thread(request.conversation_id)
            one_call = self._capabilities.messages_with_run or len(request.events) <= 1
            if not (self._capabilities.thread_with_first_run and one_call and not request.reconciling):
                return ThreadOpened(thread.id)
            return Started(self._state(self._create(thread, request)), thread.id)
        thread = self._thread(request.thread_id)
        if request.reconciling:
            found = self._find(request)
            if found is not None:
                return Started(found, request.thread_id, adopted=True)
            if self.unlocked and not request.repeat_ok:
                return Unseen()
        if request.append and not self._capabilities.messages_with_run \
                and len(request.events) - request.appended > 1:
            return self._append_next(thread, request)
        try:
            return Started(self._state(self._create(thread, request)), thread.id)
        except ThreadBusyError:
            active = self._active(thread)
        if active is not None and active.metadata.get("batch_id") == request.batch_id:
            return Started(self._state(active), thread.id, adopted=True)
        return Busy(self._state(active) if active is not None and self._capabilities.lists_runs else None)

    def _append_next(self, thread: FakeThread, request: RunRequest) -> Appended:
        count = request.appended
        if request.reconciling:  # the tags on the thread say what an unknown outcome did
            while count < len(request.events) and request.events[count].event_id in thread.event_ids:
                count += 1
            if count > request.appended:
                return Appended(count)
        event = request.events[count]
        thread.messages.append(("user", event.content, None))
        thread.event_ids.add(event.event_id)
        return Appended(count + 1)

    def find_run(self, request: RunRequest) -> RunState | None:
        found: RunState | None = self._call("find_run", lambda: self._find(request))
        return found

    def _find(self, request: RunRequest) -> RunState | None:
        thread = self._thread(request.thread_id) if request.thread_id is not None else None
        for run_id in reversed(thread.runs if thread else []):
            meta, state = self.runs[run_id].metadata, self._state(self.runs[run_id])
            if self.unlocked and state.status in ("queued", "in_progress"):
                continue  # nothing of it shows before it ends
            if meta.get("batch_id") == request.batch_id and meta.get("attempt") == str(request.attempt):
                return state
        return None

    def get_run(self, thread_id: str, run_id: str) -> RunState:
        state: RunState = self._call("get_run", lambda: self._state(self._run(run_id)))
        return state

    def confirm_run(self, request: RunRequest, run_id: str) -> RunState:
        # Runs are found by metadata: there is never a second copy to drop.
        state: RunState = self._call("confirm_run", lambda: self._state(self._run(run_id)))
        return state

    def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[dict[str, str]],
                            instructions: str | None = None, stream_to: StreamTarget | None = None) -> Submitted:
        def submit() -> Submitted:
            run = self._run(run_id)
            self._state(run)
            waiting = {c.id for c in run.tool_calls} if run.status == "requires_action" else set()
            if waiting != {o["tool_call_id"] for o in outputs}:
                raise PermanentApiError(f"run {run_id} does not wait for these tool outputs", code="invalid_request")
            names = {c.id: c.name for c in run.tool_calls}
            text = tool_results_reply(run.plan.prefix, [(names[o["tool_call_id"]], o["output"]) for o in outputs])
            run.status, run.created_at, run.tool_calls = "in_progress", self.clock(), []
            run.plan = Plan("completed", replies=(text,), prefix=run.plan.prefix)
            return Submitted(run_id)
        result: Submitted = self._call("submit_tool_outputs", submit)
        return result

    def follow_stream(self, thread_id: str, run_id: str, cursor: str | None, target: StreamTarget) -> None:
        return None  # the fake never streams

    def find_submission(self, thread_id: str, run_id: str, call_ids: list[str], sent_at: float) -> Any:
        # A submission that went through moves its run on at once (as on Assistants): a
        # test makes it unseen with reply_next("find_submission", Unseen()).
        return self._call("find_submission", lambda: None)

    def cancel_run(self, thread_id: str, run_id: str) -> None:
        def cancel() -> None:
            run = self._run(run_id)
            if self._state(run).active:
                run.status = "cancelled"
        self._call("cancel_run", cancel)

    def run_messages(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self._call("run_messages", lambda: self._messages(run_id))
        return messages

    def _messages(self, run_id: str) -> list[dict[str, Any]]:
        run = self._run(run_id)
        return [{"id": f"msg_{run_id}_{n}", "role": "assistant", "text": text, "annotations": [],
                 "created_at": int(run.created_at)} for n, text in enumerate(run.replies)]

    def run_steps(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        return [{"type": "message_creation", "status": "completed", "tool_calls": []}]

    def copy_watch(self, request: RunRequest, run_id: str) -> dict[str, Any] | None:
        watch = {"texts": [e.content for e in request.events], "kept": [run_id]} if self.unlocked else None
        result: dict[str, Any] | None = self._call("copy_watch", lambda: watch)
        return result

    def remove_late_copies(self, thread_id: str, watch: dict[str, Any]) -> int:
        def remove() -> int:
            self.user_texts(thread_id)  # what ended by now shows first
            copies = {run_id for run_id in self.threads[thread_id].runs
                      if self.runs[run_id].texts == watch["texts"] and run_id not in watch["kept"]}
            thread = self.threads[thread_id]
            thread.messages = [m for m in thread.messages if m[2] not in copies]
            return 0
        left: int = self._call("remove_late_copies", remove)
        return left

    def close(self) -> None:
        """Nothing to close: no connection is held."""

    # --- test helpers ----------------------------------------------------------------------
    def user_texts(self, thread_id: str) -> list[str]:
        for run_id in self.threads[thread_id].runs:  # what ended by now shows (unlocked: its messages)
            self._state(self.runs[run_id])
        return [text for role, text, _ in self.threads[thread_id].messages if role == "user"]

    def lose_thread(self, thread_id: str) -> None:
        """The server deletes the thread: every later call naming it (or a run of it) is a 404."""
        del self.threads[thread_id]

    def add_foreign_run(self, thread_id: str, text: str = "sleep:60") -> str:
        """Another client's run on the thread (it names no batch)."""
        request = RunRequest(conversation_id="", thread_id=thread_id, assistant_id=KNOWN_ASSISTANT,
                             instructions=None, batch_id="", attempt=0, events=[])
        run = self._create(self.threads[thread_id], request, texts=[text])
        run.metadata = {}
        return run.id

    # --- the model ---------------------------------------------------------------------------
    def _new_thread(self, conversation_id: str) -> FakeThread:
        thread = FakeThread(f"thread_{next(self._ids)}", conversation_id)
        self.threads[thread.id] = thread
        return thread

    def _create(self, thread: FakeThread, request: RunRequest, texts: list[str] | None = None) -> FakeRun:
        if not self.unlocked and self._active(thread) is not None:
            raise ThreadBusyError(f"Thread {thread.id} already has an active run.", status=400)
        if texts is None:
            texts = [e.content for e in request.events[request.appended:]] if request.append else []
        # A run answers the user messages since the last answer (a retry's are on the thread).
        unanswered = list(itertools.takewhile(lambda m: m[0] == "user", reversed(thread.messages)))
        plan = plan_run([m[1] for m in reversed(unanswered)] + texts, request.instructions or "")
        run = FakeRun(f"run_{next(self._ids)}", thread.id, plan, self.clock(),
                      plan.duration if plan.duration is not None else self.run_seconds,
                      {"batch_id": request.batch_id, "attempt": str(request.attempt)}, texts)
        if not self.unlocked:  # else they reach the thread when the run ends
            thread.messages.extend(("user", text, run.id) for text in texts)
        thread.runs.append(run.id)
        self.runs[run.id] = run
        return run

    def _active(self, thread: FakeThread) -> FakeRun | None:
        for run_id in thread.runs:
            run = self.runs[run_id]
            self._state(run)
            if run.status in ACTIVE_STATUSES:
                return run
        return None

    def _thread(self, thread_id: str) -> FakeThread:
        if thread_id not in self.threads:
            raise ThreadNotFoundError(f"No thread found with id '{thread_id}'.", thread_id=thread_id)
        return self.threads[thread_id]

    def _run(self, run_id: str) -> FakeRun:
        if run_id not in self.runs:
            raise PermanentApiError(f"No run found with id '{run_id}'.", code="not_found", status=404)
        self._thread(self.runs[run_id].thread_id)
        return self.runs[run_id]

    def _check_lengths(self, request: RunRequest) -> None:
        limit = self.max_content_chars
        for n, event in enumerate(request.events if request.append else []):
            if len(event.content) > limit:
                raise InvalidRequestError(
                    f"Invalid 'additional_messages[{n}].content': string too long. Expected a string with maximum "
                    f"length {limit}, but got a string with length {len(event.content)} instead.",
                    code="string_above_max_length", status=400, event_index=n)

    def _state(self, run: FakeRun) -> RunState:
        """Play the run's plan out up to now, then describe it."""
        if run.status in ("queued", "in_progress") and self.clock() >= run.created_at + run.duration:
            self._end(run)
        elif run.status == "queued":
            run.status = "in_progress"
        error = {"code": run.plan.error_code or "server_error", "message": run.plan.error_message or ""} \
            if run.status == "failed" else None
        return RunState(id=run.id, status=run.status, tool_calls=list(run.tool_calls), error=error,
                        metadata=dict(run.metadata))

    def _end(self, run: FakeRun) -> None:
        plan = run.plan
        if self.unlocked and not run.shown and plan.outcome in ("completed", "incomplete", "requires_action"):
            self.threads[run.thread_id].messages.extend(("user", text, run.id) for text in run.texts)
            run.shown = True
        if plan.outcome == "requires_action":
            run.status = "requires_action"
            run.tool_calls = [ToolCall(f"call_{next(self._ids)}", c.name, c.arguments) for c in plan.function_calls]
            return
        run.status = plan.outcome
        run.replies = ["\n".join(str(part["text"]["value"]) for part in reply) for reply in plan.replies]
        self.threads[run.thread_id].messages.extend(("assistant", text, run.id) for text in run.replies)


def _outcome(exc: Exception) -> str:
    """The outcome label the real backends give such an error."""
    status = getattr(exc, "status", None)
    if not isinstance(exc, TransientApiError) or isinstance(exc, ThreadBusyError):
        return "client_error"
    if status == 429:
        return "rate_limited"
    return "server_error" if status is not None and status >= 500 else "connection_error"
