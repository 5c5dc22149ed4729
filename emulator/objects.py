"""The emulator's records. Times are float epoch seconds; flavours decide how they go on the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .model import Plan

ACTIVE_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
WORKING_STATUSES = frozenset({"queued", "in_progress"})


@dataclass(slots=True)
class Assistant:
    id: str
    created_at: float
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    response_format: Any = "auto"
    seq: int = 0  # position in the store's assistant list


@dataclass(slots=True)
class Message:
    id: str
    thread_id: str
    created_at: float
    role: str
    content: list[dict[str, Any]]  # wire content parts
    text: str  # the plain text, for the model rules and the loose flavour
    status: str = "completed"
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    incomplete_reason: str | None = None
    seq: int = 0  # position in the thread's message list


@dataclass(slots=True)
class Step:
    id: str
    run: Run
    created_at: float
    type: str  # message_creation | tool_calls
    details: dict[str, Any]  # wire step_details
    status: str = "in_progress"
    completed_at: float | None = None
    cancelled_at: float | None = None
    expired_at: float | None = None
    failed_at: float | None = None
    usage: dict[str, int] | None = None
    seq: int = 0


@dataclass(slots=True)
class Thread:
    id: str
    created_at: float
    metadata: dict[str, str] = field(default_factory=dict)
    tool_resources: dict[str, Any] | None = None
    messages: list[Message] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    pending_texts: list[str] = field(default_factory=list)  # user texts since the last run
    active_run: Run | None = None


@dataclass(slots=True)
class Run:
    id: str
    thread: Thread
    assistant_id: str
    created_at: float
    model: str
    instructions: str
    tools: list[dict[str, Any]]
    plan: Plan
    duration: float  # of the current phase
    phase_start: float
    queued_until: float
    due_at: float
    settings: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, ... as sent
    metadata: dict[str, str] = field(default_factory=dict)
    status: str = "queued"
    after_tools: bool = False  # the phase after submit_tool_outputs
    started_at: float | None = None
    expires_at: float | None = None
    cancel_due: float | None = None
    cancelled_at: float | None = None
    failed_at: float | None = None
    completed_at: float | None = None
    pending_calls: list[dict[str, Any]] | None = None  # wire tool calls awaiting outputs
    tool_results: list[tuple[str, str]] = field(default_factory=list)  # (function name, output)
    last_error: dict[str, str] | None = None
    incomplete_reason: str | None = None
    usage: dict[str, int] | None = None
    steps: list[Step] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)  # created with or by this run
    finished_at: float | None = None  # last time it reached requires_action or a final status
    history: list[tuple[str, float]] = field(default_factory=list)
    polls: int = 0
    last_polled_at: float | None = None  # time of the most recent getRun
    seq: int = 0  # position in the thread's run list
    reserved: dict[str, list[str]] = field(default_factory=dict)  # ids of the phase's outcome (streams show them early)

    @property
    def thread_id(self) -> str:
        return self.thread.id


# -- Responses and Conversations APIs ---------------------------------------------------------------


@dataclass(slots=True)
class Item:
    """A conversation item (or a response's input/output item), in the Responses API's shapes."""

    id: str
    type: str  # message | function_call | function_call_output
    created_at: float
    role: str | None = None  # messages: user | assistant | system | developer
    content: list[dict[str, Any]] = field(default_factory=list)  # messages: wire content parts
    text: str = ""  # messages: the plain text (model rules, the loose flavour's string content)
    status: str = "completed"
    call_id: str | None = None  # function_call, function_call_output
    name: str | None = None  # function_call
    arguments: str | None = None  # function_call
    output: Any = None  # function_call_output: a string or a list of parts, as sent
    conversation_id: str | None = None
    seq: int = 0  # position in the conversation's item list


@dataclass(slots=True)
class Conversation:
    id: str
    created_at: float
    metadata: dict[str, str] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    calls: dict[str, Item] = field(default_factory=dict)  # call_id -> its function_call item
    open_calls: dict[str, Item] = field(default_factory=dict)  # function calls without an output yet
    working: list[ModelResponse] = field(default_factory=list)  # queued or in_progress (a lock: at most one)


@dataclass(slots=True)
class ModelResponse:
    """A Responses API response; progresses over time like a run (see conversations.py)."""

    id: str
    conversation: Conversation | None
    created_at: float
    model: str
    instructions: str | None
    tools: list[dict[str, Any]]
    plan: Plan
    duration: float
    phase_start: float
    queued_until: float
    due_at: float
    background: bool = False
    store: bool = True
    settings: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, text, ... as sent
    metadata: dict[str, str] = field(default_factory=dict)
    previous_response_id: str | None = None
    input_items: list[Item] = field(default_factory=list)
    tool_results: list[tuple[str, str]] = field(default_factory=list)  # (function name, output) from the input
    after_tools: bool = False  # the input holds function_call_output items
    status: str = "queued"
    started_at: float | None = None
    completed_at: float | None = None
    error: dict[str, str] | None = None
    incomplete_reason: str | None = None
    usage: dict[str, Any] | None = None
    output: list[Item] = field(default_factory=list)
    finished_at: float | None = None  # time it reached its final status
    history: list[tuple[str, float]] = field(default_factory=list)
    polls: int = 0
    last_polled_at: float | None = None  # time of the most recent getResponse
    stream: bool = False  # created with `stream: true` (with background: it can be re-attached)
    reserved: dict[str, list[str]] = field(default_factory=dict)  # ids of the output items (streams show them early)

    @property
    def thread_id(self) -> str | None:
        """The conversation's id (the admin views call it thread_id, as for runs)."""
        return self.conversation.id if self.conversation is not None else None
