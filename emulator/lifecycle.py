"""Time-driven run progression, computed lazily from timestamps.

No background thread moves a run: whenever a run (or its thread) is touched, `advance()` plays
out every transition whose time has come, each stamped with the time it was due, not the time
it was observed. An idle run costs nothing however many there are.

Timeline of a phase of length D starting at S: queued until S + min(0.1 D, 0.2 s), in_progress
until S + D, then the plan's outcome. requires_action expires at its deadline; cancelling becomes
cancelled after `cancel_seconds`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .config import EmulatorConfig
from .errors import bad_request
from .model import count_tokens, tool_results_reply
from .objects import ACTIVE_STATUSES, WORKING_STATUSES, Message, Run, Step, Thread

MAX_QUEUED_SECONDS = 0.2


class Host(Protocol):
    """What progression needs from the store."""

    config: EmulatorConfig

    def new_id(self, prefix: str) -> str: ...

    def add_message(self, thread: Thread, role: str, content: list[dict[str, Any]], text: str, *, at: float,
                    **fields: Any) -> Message: ...


class Reserving(Protocol):
    reserved: dict[str, list[str]]


def reserve(host: Host, record: Reserving, key: str, prefix: str, count: int) -> list[str]:
    """The ids of the current phase's outcome objects, made on first use: a stream shows them before
    the outcome exists, and the outcome then uses the same ids."""
    ids = record.reserved.setdefault(key, [])
    while len(ids) < count:
        ids.append(host.new_id(prefix))
    return ids[:count]


def phase_replies(run: Run) -> tuple[tuple[dict[str, Any], ...], ...]:
    """The content parts of each assistant message the current phase ends with (none for tools or failures)."""
    if run.after_tools:
        return (tool_results_reply(run.plan.prefix, run.tool_results),)
    if run.plan.outcome in ("completed", "incomplete"):
        return run.plan.replies
    return ()


def schedule(run: Run, start: float, duration: float) -> None:
    """Start a working phase: queued, then in_progress, outcome at start + duration."""
    run.status = "queued"
    run.reserved = {}
    run.duration = duration
    run.phase_start = start
    run.queued_until = start + min(0.1 * duration, MAX_QUEUED_SECONDS)
    run.due_at = start + duration


def advance(host: Host, run: Run, now: float) -> None:
    """Apply every transition of `run` due at or before `now`."""
    while True:
        status = run.status
        if status in WORKING_STATUSES:
            if now < run.due_at:
                if now >= run.queued_until:
                    _start(run)
                return
            _reach_outcome(host, run, run.due_at)
        elif status == "requires_action" and run.expires_at is not None and now >= run.expires_at:
            _close(run, "expired", run.expires_at)
        elif status == "cancelling" and run.cancel_due is not None and now >= run.cancel_due:
            run.cancelled_at = run.cancel_due
            _close(run, "cancelled", run.cancel_due)
        else:
            return


def time_left(run: Run, now: float) -> float | None:
    """Seconds until the next transition of a working or cancelling run, else None."""
    if run.status in WORKING_STATUSES:
        return max(0.0, run.due_at - now)
    if run.status == "cancelling" and run.cancel_due is not None:
        return max(0.0, run.cancel_due - now)
    return None


def cancel(host: Host, run: Run, now: float) -> None:
    advance(host, run, now)
    if run.status == "cancelling":
        return
    if run.status not in ACTIVE_STATUSES:
        raise bad_request(f"Cannot cancel run with status '{run.status}'.")
    run.cancel_due = now + host.config.cancel_seconds
    _mark(run, "cancelling", now)


def submit_tool_outputs(host: Host, run: Run, outputs: list[dict[str, Any]], now: float) -> None:
    advance(host, run, now)
    if run.status != "requires_action" or run.pending_calls is None:
        raise bad_request(f'Runs in status "{run.status}" do not accept tool outputs.')
    expected = [call["id"] for call in run.pending_calls]
    got = [output.get("tool_call_id") if isinstance(output, dict) else None for output in outputs]
    if sorted(map(str, got)) != sorted(expected):
        raise bad_request(f"Expected tool outputs for call_ids {expected}, got {got}", param="tool_outputs")
    by_id = {}
    for index, output in enumerate(outputs):
        if not isinstance(output.get("output"), str):
            raise bad_request("Invalid type for 'output': expected a string.", param=f"tool_outputs[{index}].output")
        by_id[output["tool_call_id"]] = output["output"]
    _record_outputs(run, by_id, now)
    run.pending_calls = None
    run.expires_at = None
    run.after_tools = True
    after = host.config.after_tools_seconds
    schedule(run, now, run.duration if after is None else after)


def _start(run: Run) -> None:
    run.status = "in_progress"
    if run.started_at is None:
        run.started_at = run.queued_until


def _reach_outcome(host: Host, run: Run, at: float) -> None:
    if run.started_at is None:
        run.started_at = run.queued_until
    plan = run.plan
    if run.after_tools:
        _deliver(host, run, at, phase_replies(run))
        run.completed_at = at
        _close(run, "completed", at)
    elif plan.outcome == "completed":
        for step_id, tool_call in hosted_steps(host, run):
            details = {"type": "tool_calls", "tool_calls": [tool_call]}
            _add_step(host, run, at, "tool_calls", details, status="completed", step_id=step_id)
        _deliver(host, run, at, plan.replies)
        run.completed_at = at
        _close(run, "completed", at)
    elif plan.outcome == "requires_action":
        _require_action(host, run, at)
    elif plan.outcome == "failed":
        run.failed_at = at
        run.last_error = {"code": plan.error_code or "server_error", "message": plan.error_message or "Failed."}
        _close(run, "failed", at)
    elif plan.outcome == "incomplete":
        _deliver(host, run, at, plan.replies, incomplete=True)
        run.incomplete_reason = "max_completion_tokens"
        run.completed_at = at
        _close(run, "incomplete", at)
    else:  # expired straight away
        run.expires_at = at
        _close(run, "expired", at)


def hosted_steps(host: Host, run: Run) -> list[tuple[str, dict[str, Any]]]:
    """(step id, tool call) of each hosted tool step (code_interpreter, file_search) of a completed run."""
    calls = run.plan.hosted_calls
    step_ids = reserve(host, run, "hosted_step", "step", len(calls))
    call_ids = reserve(host, run, "hosted_call", "call", len(calls))
    return [(step_id, {"id": call_id, "type": call.type, call.type: call.detail})
            for step_id, call_id, call in zip(step_ids, call_ids, calls, strict=True)]


def message_ids(host: Host, run: Run, count: int) -> list[tuple[str, str]]:
    """(step id, message id) of each assistant message of the phase."""
    return list(zip(reserve(host, run, "message_step", "step", count), reserve(host, run, "message", "msg", count),
                    strict=True))


def tool_call_ids(host: Host, run: Run) -> tuple[str, list[str]]:
    """The tool_calls step id and the call ids of a run that will require action."""
    calls = len(run.plan.function_calls)
    return reserve(host, run, "tool_step", "step", 1)[0], reserve(host, run, "call", "call", calls)


def _require_action(host: Host, run: Run, at: float) -> None:
    calls, step_calls = [], []
    step_id, call_ids = tool_call_ids(host, run)
    for call, call_id in zip(run.plan.function_calls, call_ids, strict=True):
        calls.append({"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}})
        step_calls.append({"id": call_id, "type": "function",
                           "function": {"name": call.name, "arguments": call.arguments, "output": None}})
    _add_step(host, run, at, "tool_calls", {"type": "tool_calls", "tool_calls": step_calls}, status="in_progress",
              step_id=step_id)
    run.pending_calls = calls
    ttl = host.config.expire_rule_seconds if run.plan.short_deadline else host.config.action_ttl_seconds
    run.expires_at = at + ttl
    _mark(run, "requires_action", at)


def _record_outputs(run: Run, outputs: dict[str, str], now: float) -> None:
    for step in run.steps:
        if step.status != "in_progress" or step.type != "tool_calls":
            continue
        for call in step.details["tool_calls"]:
            if call["id"] in outputs:
                call["function"]["output"] = outputs[call["id"]]
                run.tool_results.append((call["function"]["name"], outputs[call["id"]]))
        _settle_step(step, "completed", now)


def _deliver(host: Host, run: Run, at: float, replies: Any, incomplete: bool = False) -> None:
    for parts, (step_id, msg_id) in zip(replies, message_ids(host, run, len(replies)), strict=True):
        text = message_text(parts)
        extra = {"status": "incomplete", "incomplete_reason": "max_tokens"} if incomplete else {}
        msg = host.add_message(run.thread, "assistant", [_copy_part(p) for p in parts], text, at=at,
                               run=run, assistant_id=run.assistant_id, msg_id=msg_id, **extra)
        details = {"type": "message_creation", "message_creation": {"message_id": msg.id}}
        step = _add_step(host, run, at, "message_creation", details, status="completed", step_id=step_id)
        step.usage = step_usage(run, text)


def message_text(parts: Any) -> str:
    """A message's plain text: its text parts joined by newlines."""
    return "\n".join(part["text"]["value"] for part in parts if part["type"] == "text")


def step_usage(run: Run, text: str) -> dict[str, int]:
    """The usage of a message_creation step whose message has `text`."""
    return _usage(run.plan.prompt_tokens, count_tokens(text))


def _add_step(host: Host, run: Run, at: float, kind: str, details: dict[str, Any], *, status: str,
              step_id: str) -> Step:
    step = Step(step_id, run, at, kind, details, seq=len(run.steps))
    run.steps.append(step)
    if status != "in_progress":
        _settle_step(step, status, at)
    return step


def _settle_step(step: Step, status: str, at: float) -> None:
    step.status = status
    setattr(step, f"{status}_at", at)
    if step.usage is None:
        step.usage = _usage(step.run.plan.prompt_tokens, count_tokens(json.dumps(step.details)))


def _close(run: Run, status: str, at: float) -> None:
    """A final status: end open steps, drop the pending action, count usage."""
    step_status = status if status in ("cancelled", "expired", "failed") else "completed"
    for step in run.steps:
        if step.status == "in_progress":
            _settle_step(step, step_status, at)
    run.pending_calls = None
    completion = sum(count_tokens(m.text) for m in run.messages if m.role == "assistant")
    completion += sum(count_tokens(call.arguments) for call in run.plan.function_calls)
    prompt = run.plan.prompt_tokens * (2 if run.after_tools else 1)
    prompt += sum(count_tokens(output) for _, output in run.tool_results)
    run.usage = _usage(prompt, completion)
    _mark(run, status, at)


def _mark(run: Run, status: str, at: float) -> None:
    run.status = status
    run.history.append((status, at))
    if status != "cancelling":
        run.finished_at = at


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _copy_part(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] == "text":
        text = part["text"]
        return {"type": "text", "text": {"value": text["value"], "annotations": list(text["annotations"])}}
    return {key: dict(value) if isinstance(value, dict) else value for key, value in part.items()}
