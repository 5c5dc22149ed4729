"""The backend interface: the few API operations the worker needs.

Contract for implementations:
- Calls block for at most the configured API timeout and never sleep to wait for a run:
  polling is scheduled by the caller.
- Errors are translated to worker.errors: TransientApiError (retry later; `maybe_applied`
  when a POST may have gone through), ThreadBusyError, PermanentApiError, InvalidRequestError.
- Creating calls are not retried blindly: `find_run` lets the caller adopt a run that a lost
  response created (Assistants: runs carry `batch_id` and `attempt` in their metadata;
  Responses: the batch's user items found in the conversation after the previous run).
  A run created while an earlier create may have gone through comes back `confirmed=False`;
  the caller follows it through `confirm_run` until it is confirmed (or replaced).
- Backends whose tool submission starts a new run (Responses) return its id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.events import InboundEvent

# A run known without its API id (Responses: found through conversation items after a lost
# answer); published with run_id null.
UNKNOWN_ID_PREFIX = "items:"
ACTIVE_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class RunState:
    id: str
    status: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: dict[str, str] | None = None
    usage: dict[str, Any] | None = None
    expires_at: float | None = None
    poll_after_ms: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    idle: bool = False  # nothing runs on the server (Responses: calls await a new response)
    # False: created while an earlier create of the same messages may have gone through;
    # follow it through `confirm_run` until the backend says it is the only one.
    confirmed: bool = True

    @property
    def active(self) -> bool:
        return self.status not in TERMINAL_STATUSES

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class RunRequest:
    """What one run of a batch needs."""

    thread_id: str
    assistant_id: str
    instructions: str | None
    batch_id: str
    attempt: int
    events: list[InboundEvent]
    append: bool = True  # the events go in with the run (False: already on the thread)
    after_run_id: str | None = None  # the conversation's previous run (for find_run)
    reconciling: bool = False  # an earlier create of this batch may have gone through


class RunBackend(Protocol):
    needs_assistant: bool  # runs name an assistant (ASSISTANT_ID or the event's)

    def create_thread(self, conversation_id: str) -> str: ...

    def create_run(self, request: RunRequest) -> RunState: ...

    def create_thread_and_run(self, conversation_id: str,
                              request: RunRequest) -> tuple[str, RunState] | None: ...

    def find_run(self, request: RunRequest) -> RunState | None: ...

    def active_run(self, thread_id: str) -> RunState | None: ...

    def get_run(self, thread_id: str, run_id: str) -> RunState: ...

    def confirm_run(self, request: RunRequest, run_id: str) -> RunState: ...

    def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[dict[str, str]],
                            instructions: str | None = None) -> str | None: ...

    def cancel_run(self, thread_id: str, run_id: str) -> None: ...

    def run_messages(self, thread_id: str, run_id: str) -> list[dict[str, Any]]: ...

    def run_steps(self, thread_id: str, run_id: str) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...
