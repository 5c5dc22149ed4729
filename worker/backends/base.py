"""The backend interface: what the worker needs of an API, and what each call promises.

Two implementations: Assistants v2 (`assistants.py`) and Responses with Conversations
(`responses.py`); an in-process fake for unit tests (`tests/unit/fake_backend.py`) passes
the same contract tests (`tests/contract/`).

Every method:
- blocks for at most the API timeout and never sleeps to wait for a run (the caller
  schedules polls);
- raises only the errors of worker.errors: `TransientApiError` (retry later; its
  `maybe_applied` says a POST may have gone through), `PermanentApiError` (retrying the
  same request fails again), and among those `InvalidRequestError` (the batch's own fault:
  reject it, with the API's code), `ThreadNotFoundError` (the server lost the thread or
  conversation the call named), `RouteNotFoundError` (the server has no such endpoint) and
  `RequestRefusedError` (a field the worker sets is refused). `ThreadBusyError` never
  leaves `start_run`: it becomes `Busy`.

Creating calls are never retried blindly: after an unknown outcome the caller says so
(`RunRequest.reconciling`) and the backend looks for what the earlier call made before it
creates anything (Assistants: runs tagged with the batch id and attempt; Responses: the
response tagged so where responses can be listed, else the batch's user items in the
conversation after the previous run's). Where an earlier create may be running unseen (a
Responses server that neither lists responses nor locks a conversation), the backend says
so (`Unseen`) instead of creating, until the caller allows a repeat (`repeat_ok`); the
caller then watches the conversation for a late copy (`copy_watch`, `remove_late_copies`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.events import InboundEvent

ACTIVE_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})


@dataclass(frozen=True)
class Capabilities:
    """What a server can do. A backend may learn that it cannot (a route it lacks) and
    report so from then on."""

    needs_assistant: bool  # runs name an assistant (ASSISTANT_ID or the event's)
    thread_with_first_run: bool  # a new thread, its messages and its run in one call
    messages_with_run: bool  # a run's create takes several user messages with it
    lists_runs: bool  # a thread's runs can be listed (another client's active run is found)
    tool_round_starts_run: bool  # submitting tool outputs starts a new run to follow
    stream: bool = False  # runs can be followed by their event stream
    # An earlier create may show up after a second one was made (Responses on a server that
    # neither lists responses nor locks a conversation): watch for a late copy.
    leaves_late_copies: bool = False


@dataclass(frozen=True)
class RunRef:
    """A run as the worker knows it: by the API's id, or (Responses, after a lost answer)
    only by the conversation item after which its items start. Stored encoded."""

    api_id: str | None = None
    after_item: str | None = None

    _ITEMS = "items:"

    def encode(self) -> str:
        return self.api_id if self.api_id is not None else self._ITEMS + (self.after_item or "")

    @classmethod
    def decode(cls, text: str) -> RunRef:
        if text.startswith(cls._ITEMS):
            return cls(after_item=text[len(cls._ITEMS):])
        return cls(api_id=text)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class RunState:
    id: str  # the run's RunRef, encoded
    status: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: dict[str, str] | None = None
    usage: dict[str, Any] | None = None
    expires_at: float | None = None
    poll_after_ms: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Nothing runs on the server while the calls wait (Responses: the response ended with
    # function calls; its usage is its own, counted once).
    idle: bool = False
    # False: created while an earlier create of the same input may have gone through; the
    # caller follows it through `confirm_run` until it is confirmed or replaced.
    confirmed: bool = True
    # Followed by its event stream, opened by this call: the stream's owner (worker/streams/).
    stream_owner: str | None = None
    # An ended run's messages as the outbound entry has them, when its stream carried them
    # all (None: the step reads them).
    messages: list[dict[str, Any]] | None = None

    @property
    def active(self) -> bool:
        return self.status not in TERMINAL_STATUSES

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def needs_worker(self) -> bool:
        """Ended, or waiting for tool outputs: the worker acts."""
        return self.terminal or self.status == "requires_action"


@dataclass(frozen=True)
class StreamTarget:
    """The batch a run's stream writes for (worker/streams/): its deltas' conversation,
    batch and events."""

    conversation_id: str
    batch_id: str
    event_ids: list[str]


@dataclass(frozen=True)
class Submitted:
    """A tool round's outputs went in: the run to follow next (the same id, or a new run's
    when `tool_round_starts_run`), and the stream that follows it, if one does."""

    run_id: str
    stream_owner: str | None = None


@dataclass(frozen=True)
class RunRequest:
    """What one run of a batch needs."""

    conversation_id: str
    thread_id: str | None  # None: the conversation has no thread yet
    assistant_id: str
    instructions: str | None
    batch_id: str
    attempt: int
    events: list[InboundEvent]
    append: bool = True  # the events go in with the run (False: already on the thread)
    appended: int = 0  # the first events already on the thread (appended one at a time)
    after_run_id: str | None = None  # the conversation's previous run (Responses' marker)
    reconciling: bool = False  # an earlier create of this batch may have gone through
    # Creating may repeat an earlier create nobody can see yet: allowed (its wait is over,
    # or none may have gone through). Else such a backend answers `Unseen`.
    repeat_ok: bool = False
    opened_at: float | None = None  # when the batch opened: its creates are not older
    stream_to: StreamTarget | None = None  # follow the run by its stream, where it can be

    @property
    def thread(self) -> str:
        """The thread, for the calls that need one (start_run makes it first)."""
        if self.thread_id is None:
            raise ValueError(f"batch {self.batch_id} has no thread yet")
        return self.thread_id


@dataclass(frozen=True)
class Started:
    """The batch's run exists: created now, or found (`adopted`) where a lost answer left it."""

    run: RunState
    thread_id: str  # the thread it runs on (new when the thread was created with it)
    adopted: bool = False


@dataclass(frozen=True)
class ThreadOpened:
    """A thread was created and no run yet: record it, then call `start_run` again."""

    thread_id: str


@dataclass(frozen=True)
class Busy:
    """The thread has an active run that is not this batch's. `foreign` is that run when
    runs can be listed; None when they cannot (it may be an earlier create of ours still
    running, or another client's): look again later."""

    foreign: RunState | None


@dataclass(frozen=True)
class Appended:
    """The server takes one user message per request (Capabilities.messages_with_run
    false): the batch's first `count` events are on the thread now. Record it, then call
    `start_run` again."""

    count: int


@dataclass(frozen=True)
class Unseen:
    """Reconciling, nothing of an earlier create shows, and this server would not show it
    while it runs (it neither lists responses nor locks the conversation): it may still be
    running. Look again later; call with `repeat_ok` to create anyway."""


RunStart = Started | ThreadOpened | Appended | Busy | Unseen


def earlier_run(backend: RunBackend, request: RunRequest) -> Started | None:
    """After an unknown outcome (`reconciling`), the run an earlier create of this batch
    made, adopted; None when there is nothing to adopt (create, then)."""
    if not request.reconciling:
        return None
    found = backend.find_run(request)
    return Started(found, request.thread, adopted=True) if found is not None else None


class RunBackend(Protocol):
    @property
    def capabilities(self) -> Capabilities: ...

    def start_run(self, request: RunRequest) -> RunStart:
        """Find or create the batch's run. May make several API calls (a thread, a look for
        an earlier create's run, the create); a crash between them leaves at most a thread
        nobody recorded (harmless) or a run that `reconciling` finds. Raises
        InvalidRequestError when the request itself is refused (an unknown assistant, a
        message the API finds too long: its `event_index` names the event when the API named
        the message), ThreadNotFoundError when the thread it names is gone."""
        ...

    def find_run(self, request: RunRequest) -> RunState | None:
        """The run an earlier create of this batch and attempt made, or None (never made,
        or, Responses, made and still running)."""
        ...

    def get_run(self, thread_id: str, run_id: str) -> RunState:
        """The run's state now (a read, never applied). A run found to have gone on under
        another id (Responses: tool outputs an attempt submitted) comes back with that id."""
        ...

    def confirm_run(self, request: RunRequest, run_id: str) -> RunState:
        """The state of an unconfirmed run, confirmed when it is the only copy of its input;
        when an earlier copy exists, this one is cancelled or its copy deleted and the
        earlier one is returned. May be applied in part: call again until confirmed."""
        ...

    def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[dict[str, str]],
                            instructions: str | None = None, stream_to: StreamTarget | None = None) -> Submitted:
        """Submit a tool round's outputs; the run to follow next. May have been applied when
        it raises. `stream_to`: follow the next run by its stream, where it can be."""
        ...

    def follow_stream(self, thread_id: str, run_id: str, cursor: str | None, target: StreamTarget) -> str | None:
        """Re-attach to the stream of a run whose reader broke off or died (`cursor`: what
        the batch stored, "run_id sequence_number"); the new stream's owner, or None when
        the run is to be polled (Assistants cannot re-attach)."""
        ...

    def find_submission(self, thread_id: str, run_id: str, call_ids: list[str],
                        sent_at: float) -> str | Unseen | None:
        """After a submission of these calls' outputs whose outcome is unknown (sent about
        `sent_at`), while `run_id` still shows them unanswered: the run it started (its id),
        None when it cannot have gone through (submit again), or Unseen when this server would
        not show it while it runs."""
        ...

    def cancel_run(self, thread_id: str, run_id: str) -> None:
        """Ask the API to stop the run (it may refuse or take time: poll `get_run`). A run
        known only by its items cannot be cancelled: a no-op."""
        ...

    def run_messages(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        """The assistant messages a run wrote, oldest first, in the outbound entry's shape."""
        ...

    def run_steps(self, thread_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's steps, in the outbound entry's shape."""
        ...

    def copy_watch(self, request: RunRequest, run_id: str) -> dict[str, Any] | None:
        """What identifies the batch's copy of its input that `run_id` answered (JSON-able),
        for `remove_late_copies`; None when this backend never leaves a late copy."""
        ...

    def remove_late_copies(self, thread_id: str, watch: dict[str, Any]) -> int:
        """Delete every copy of the watched input (its user items and what its response
        added) but the kept one; returns the items of other copies still there (a delete
        failed). Copies not there yet are left for a later call."""
        ...

    def close(self) -> None: ...
