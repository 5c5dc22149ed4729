"""The backend interface: the few API operations the worker needs.

Contract for implementations:
- Calls block for at most the configured API timeout and never sleep to wait for a run:
  polling is scheduled by the caller.
- Errors are translated to worker.errors: TransientApiError (retry later; `maybe_applied`
  when a POST may have gone through), ThreadBusyError, PermanentApiError, InvalidRequestError.
- Creating calls are not retried blindly: `find_run` lets the caller adopt a run that a lost
  response created (runs carry `batch_id` and `attempt` in their metadata).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.events import InboundEvent

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
    events: list[InboundEvent]  # appended with the run; empty when already on the thread


class RunBackend(Protocol):
    def create_thread(self, conversation_id: str) -> str: ...

    def create_run(self, request: RunRequest) -> RunState: ...

    def find_run(self, thread_id: str, batch_id: str, attempt: int) -> RunState | None: ...

    def active_run(self, thread_id: str) -> RunState | None: ...

    def get_run(self, thread_id: str, run_id: str) -> RunState: ...

    def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[dict[str, str]]) -> None: ...

    def cancel_run(self, thread_id: str, run_id: str) -> None: ...

    def run_messages(self, thread_id: str, run_id: str) -> list[dict[str, Any]]: ...

    def run_steps(self, thread_id: str, run_id: str) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...
