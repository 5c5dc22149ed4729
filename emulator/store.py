"""The emulator's objects, their indexes and the operations on them (Responses and Conversations: conversations.py).

Every method expects `store.lock` to be held by the caller (one lock for the whole store; each
operation is O(1) apart from the pages it returns). Runs progress lazily: see lifecycle.py.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from . import lifecycle, validate
from .config import EmulatorConfig
from .conversations import ConversationStore
from .errors import ApiError, bad_request, not_found
from .flavours import FLAVOURS
from .model import Plan, expiry_plan, failure_plan, plan_run
from .objects import ACTIVE_STATUSES, Assistant, Message, Run, Step, Thread
from .pagination import paginate

DEFAULT_ASSISTANT_ID = "asst_default"
DEFAULT_INSTRUCTIONS = "You are a personal math tutor. Write and run code to answer math questions."
_ASSISTANT_OPTIONAL = (
    ("name", str), ("description", str), ("instructions", str), ("tools", list), ("tool_resources", dict),
    ("temperature", (int, float)), ("top_p", (int, float)), ("response_format", (str, dict)),
)
_RUN_DEFAULTS: dict[str, Any] = {
    "max_prompt_tokens": None, "max_completion_tokens": None, "tool_choice": "auto", "parallel_tool_calls": True,
}


class Store:
    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self.config = config
        self.flavour = FLAVOURS[config.flavour]
        self.rng = random.Random(config.seed)
        self.reset()

    # -- housekeeping ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every object but the default assistant."""
        self.assistants: dict[str, Assistant] = {}
        self.assistant_list: list[Assistant] = []
        self.threads: dict[str, Thread] = {}
        self.messages: dict[str, Message] = {}
        self.runs: dict[str, Run] = {}
        self.conversations = ConversationStore(self)  # the Responses and Conversations APIs
        self._add_assistant(Assistant(DEFAULT_ASSISTANT_ID, self.clock(), "gpt-4o", name="Math Tutor",
                                      instructions=DEFAULT_INSTRUCTIONS, tools=[{"type": "code_interpreter"}]))

    def reconfigure(self, config: EmulatorConfig) -> None:
        if config.seed != self.config.seed:
            self.rng.seed(config.seed)
        self.config = config
        self.flavour = FLAVOURS[config.flavour]

    def new_id(self, prefix: str) -> str:
        return self.flavour.new_id(prefix)

    def add_message(self, thread: Thread, role: str, content: list[dict[str, Any]], text: str, *, at: float,
                    run: Run | None = None, msg_id: str | None = None, **fields: Any) -> Message:
        msg = Message(msg_id or self.new_id("msg"), thread.id, at, role, content, text, seq=len(thread.messages),
                      **fields)
        if run is not None:
            msg.run_id = run.id
            run.messages.append(msg)
        thread.messages.append(msg)
        self.messages[msg.id] = msg
        return msg

    def settle_all(self, now: float) -> None:
        """Bring every active run and response up to date (admin views only: O(threads))."""
        for thread in self.threads.values():
            self._settle(thread, now)
        self.conversations.settle_all(now)

    def settle_run(self, run: Run, now: float) -> None:
        """Bring a run (and its thread's active run) up to date."""
        self._settle(run.thread, now)

    def run_counts(self) -> dict[str, Any]:
        by_status = Counter(run.status for run in self.runs.values())
        return {"total": len(self.runs), "by_status": dict(by_status)}

    # -- assistants --------------------------------------------------------------------------

    def create_assistant(self, body: Mapping[str, Any], now: float) -> Assistant:
        validate.known_fields(body, validate.ASSISTANT_FIELDS, self._strict)
        model = validate.require(body, "model", str)
        assistant = Assistant(self.new_id("asst"), now, model)
        self._update_assistant(assistant, body)
        self._add_assistant(assistant)
        return assistant

    def get_assistant(self, assistant_id: str) -> Assistant:
        assistant = self.assistants.get(assistant_id)
        if assistant is None:
            raise not_found("assistant", assistant_id)
        return assistant

    def modify_assistant(self, assistant_id: str, body: Mapping[str, Any]) -> Assistant:
        assistant = self.get_assistant(assistant_id)
        validate.known_fields(body, validate.ASSISTANT_FIELDS, self._strict)
        if body.get("model") is not None:
            assistant.model = validate.expect(body["model"], str, "model")
        self._update_assistant(assistant, body)
        return assistant

    def delete_assistant(self, assistant_id: str) -> None:
        assistant = self.get_assistant(assistant_id)
        del self.assistants[assistant_id]
        self.assistant_list.remove(assistant)
        for seq, item in enumerate(self.assistant_list):
            item.seq = seq

    def list_assistants(self, query: Mapping[str, str]) -> tuple[list[Assistant], bool]:
        def index_of(object_id: str) -> int | None:
            found = self.assistants.get(object_id)
            return found.seq if found else None

        return paginate(self.assistant_list, validate.list_query(query), index_of)

    # -- threads and messages ----------------------------------------------------------------

    def create_thread(self, body: Mapping[str, Any], now: float) -> Thread:
        validate.known_fields(body, validate.THREAD_FIELDS, self._strict)
        messages = validate.optional(body, "messages", list, [])
        inputs = [validate.message_input(m, self._strict, f"messages[{i}].", self._max_chars)
                  for i, m in enumerate(messages)]
        thread = Thread(self.new_id("thread"), now, validate.metadata(body.get("metadata")),
                        validate.optional(body, "tool_resources", dict))
        self.threads[thread.id] = thread
        for item in inputs:
            self._add_input(thread, item, now)
        return thread

    def get_thread(self, thread_id: str, now: float) -> Thread:
        thread = self.threads.get(thread_id)
        if thread is None:
            raise not_found("thread", thread_id, "thread_id")
        self._settle(thread, now)
        return thread

    def delete_thread(self, thread_id: str, now: float) -> None:
        """The thread, its messages and its runs are gone (later calls naming it: 404)."""
        thread = self.get_thread(thread_id, now)
        for message in thread.messages:
            self.messages.pop(message.id, None)
        for run in thread.runs:
            self.runs.pop(run.id, None)
        del self.threads[thread.id]

    def create_message(self, thread_id: str, body: Mapping[str, Any], now: float) -> Message:
        item = validate.message_input(body, self._strict, max_chars=self._max_chars)
        thread = self.get_thread(thread_id, now)
        active = thread.active_run
        if active is not None:
            raise ApiError(self.flavour.active_run_status,
                           f"Can't add messages to {thread.id} while a run {active.id} is active.")
        return self._add_input(thread, item, now)

    def get_message(self, thread_id: str, message_id: str, now: float) -> Message:
        thread = self.get_thread(thread_id, now)
        msg = self.messages.get(message_id)
        if msg is None or msg.thread_id != thread.id:
            raise not_found("message", message_id)
        return msg

    def list_messages(self, thread_id: str, query: Mapping[str, str], now: float) -> tuple[list[Message], bool]:
        thread = self.get_thread(thread_id, now)
        page_query = validate.list_query(query)
        run_id = query.get("run_id")
        if not run_id:
            def index_of(object_id: str) -> int | None:
                found = self.messages.get(object_id)
                return found.seq if found is not None and found.thread_id == thread.id else None

            return paginate(thread.messages, page_query, index_of)
        run = self.runs.get(run_id)
        if run is None or run.thread is not thread:
            return [], False
        positions = {msg.id: index for index, msg in enumerate(run.messages)}
        return paginate(run.messages, page_query, positions.get)

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, thread_id: str, body: Mapping[str, Any], now: float) -> Run:
        validate.known_fields(body, validate.RUN_FIELDS, self._strict)
        validate.optional(body, "stream", bool)
        assistant_id = validate.require(body, "assistant_id", str)
        extra = validate.optional(body, "additional_messages", list, [])
        inputs = [validate.message_input(m, self._strict, f"additional_messages[{i}].", self._max_chars)
                  for i, m in enumerate(extra)]
        thread = self.get_thread(thread_id, now)
        assistant = self.assistants.get(assistant_id)
        if assistant is None:
            raise bad_request(f"No assistant found with id '{assistant_id}'.", param="assistant_id")
        if thread.active_run is not None:
            raise ApiError(self.flavour.active_run_status,
                           f"Thread {thread.id} already has an active run {thread.active_run.id}.")
        instructions = self._instructions(body, assistant)
        texts = thread.pending_texts + [item.text for item in inputs if item.role == "user"]
        plan = self._plan(texts, instructions)
        duration = plan.duration if plan.duration is not None else self._duration()
        run = Run(
            self.new_id("run"), thread, assistant.id, now, validate.optional(body, "model", str, assistant.model),
            instructions, validate.optional(body, "tools", list, assistant.tools), plan, duration, now, now, now,
            settings=self._run_settings(body, assistant), metadata=validate.metadata(body.get("metadata")),
            seq=len(thread.runs),
        )
        lifecycle.schedule(run, now, duration)
        for item in inputs:
            self._add_input(thread, item, now, run)
        thread.pending_texts = []
        thread.runs.append(run)
        thread.active_run = run
        self.runs[run.id] = run
        return run

    def create_thread_and_run(self, body: Mapping[str, Any], now: float) -> Run:
        """A new thread (`thread`: its messages and metadata) and a run on it, in one call."""
        if not self.flavour.thread_and_run:  # some compatible servers have no such route
            raise ApiError(404, "Invalid URL (POST /v1/threads/runs)")
        validate.known_fields(body, validate.THREAD_AND_RUN_FIELDS, self._strict)
        validate.optional(body, "stream", bool)
        assistant_id = validate.require(body, "assistant_id", str)
        if assistant_id not in self.assistants:  # checked first: a refused request creates nothing
            raise bad_request(f"No assistant found with id '{assistant_id}'.", param="assistant_id")
        thread_body = dict(validate.optional(body, "thread", dict, {}))
        if "tool_resources" in body and "tool_resources" not in thread_body:
            thread_body["tool_resources"] = body["tool_resources"]
        thread = self.create_thread(thread_body, now)
        return self.create_run(thread.id, {k: v for k, v in body.items() if k not in ("thread", "tool_resources")},
                               now)

    def get_run(self, thread_id: str, run_id: str, now: float, poll: bool = False) -> Run:
        thread = self.get_thread(thread_id, now)
        run = self.runs.get(run_id)
        if run is None or run.thread is not thread:
            raise not_found("run", run_id, "run_id")
        if poll:
            run.polls += 1
            run.last_polled_at = now
        return run

    def list_runs(self, thread_id: str, query: Mapping[str, str], now: float) -> tuple[list[Run], bool]:
        thread = self.get_thread(thread_id, now)

        def index_of(object_id: str) -> int | None:
            found = self.runs.get(object_id)
            return found.seq if found is not None and found.thread is thread else None

        return paginate(thread.runs, validate.list_query(query), index_of)

    def cancel_run(self, thread_id: str, run_id: str, now: float) -> Run:
        run = self.get_run(thread_id, run_id, now)
        lifecycle.cancel(self, run, now)
        return run

    def submit_tool_outputs(self, thread_id: str, run_id: str, body: Mapping[str, Any], now: float) -> Run:
        validate.known_fields(body, validate.SUBMIT_FIELDS, self._strict)
        validate.optional(body, "stream", bool)
        outputs = validate.require(body, "tool_outputs", list)
        run = self.get_run(thread_id, run_id, now)
        lifecycle.submit_tool_outputs(self, run, outputs, now)
        return run

    def list_steps(self, thread_id: str, run_id: str, query: Mapping[str, str], now: float) -> tuple[list[Step], bool]:
        run = self.get_run(thread_id, run_id, now)
        positions = {step.id: step.seq for step in run.steps}
        return paginate(run.steps, validate.list_query(query), positions.get)

    def get_step(self, thread_id: str, run_id: str, step_id: str, now: float) -> Step:
        run = self.get_run(thread_id, run_id, now)
        for step in run.steps:
            if step.id == step_id:
                return step
        raise not_found("run step", step_id, "step_id")

    # -- helpers -----------------------------------------------------------------------------

    @property
    def _strict(self) -> bool:
        return self.flavour.name == "strict"

    @property
    def _max_chars(self) -> int:
        return self.config.max_content_chars or validate.ASSISTANTS_MAX_CHARS

    def _settle(self, thread: Thread, now: float) -> None:
        run = thread.active_run
        if run is not None:
            lifecycle.advance(self, run, now)
            if run.status not in ACTIVE_STATUSES:
                thread.active_run = None

    def _add_assistant(self, assistant: Assistant) -> None:
        assistant.seq = len(self.assistant_list)
        self.assistants[assistant.id] = assistant
        self.assistant_list.append(assistant)

    def _update_assistant(self, assistant: Assistant, body: Mapping[str, Any]) -> None:
        for name, kind in _ASSISTANT_OPTIONAL:
            if name in body:
                value = body[name]
                setattr(assistant, name, None if value is None else validate.expect(value, kind, name))
        if assistant.tools is None:
            assistant.tools = []
        if "metadata" in body:
            assistant.metadata = validate.metadata(body["metadata"])

    def _add_input(self, thread: Thread, item: validate.MessageInput, now: float, run: Run | None = None) -> Message:
        if item.role == "user" and run is None:
            thread.pending_texts.append(item.text)
        return self.add_message(thread, item.role, item.content, item.text, at=now, run=run,
                                attachments=item.attachments, metadata=item.metadata)

    def _instructions(self, body: Mapping[str, Any], assistant: Assistant) -> str:
        base = validate.optional(body, "instructions", str)
        instructions = base if base is not None else (assistant.instructions or "")
        additional = validate.optional(body, "additional_instructions", str)
        return f"{instructions}\n{additional}" if additional else instructions

    def _plan(self, texts: list[str], instructions: str) -> Plan:
        spec_codes = not self.flavour.free_error_codes
        plan = plan_run(texts, instructions, spec_error_codes=spec_codes)
        fail_rate, expire_rate = self.config.fail_rate, self.config.expire_rate
        if fail_rate or expire_rate:
            draw = self.rng.random()
            if draw < fail_rate:
                return failure_plan(plan, "server_error", spec_error_codes=spec_codes)
            if draw < fail_rate + expire_rate:
                return expiry_plan(plan)
        return plan

    def _duration(self) -> float:
        jitter = self.config.jitter
        factor = self.rng.uniform(1 - jitter, 1 + jitter) if jitter else 1.0
        return self.config.run_seconds * factor

    def _run_settings(self, body: Mapping[str, Any], assistant: Assistant) -> dict[str, Any]:
        settings = {name: body.get(name, default) for name, default in _RUN_DEFAULTS.items()}
        settings["temperature"] = _first(body.get("temperature"), assistant.temperature, 1.0)
        settings["top_p"] = _first(body.get("top_p"), assistant.top_p, 1.0)
        settings["response_format"] = _first(body.get("response_format"), assistant.response_format, "auto")
        settings["truncation_strategy"] = body.get("truncation_strategy") or {"type": "auto", "last_messages": None}
        for name in ("tool_choice", "parallel_tool_calls"):
            if settings[name] is None:
                settings[name] = _RUN_DEFAULTS[name]
        return settings


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)
