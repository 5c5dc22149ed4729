"""The deterministic "model": keywords in the user's messages choose a run's outcome and reply.

Pure functions, no I/O and no clock: `plan_run()` turns the batch of user texts and the run's
instructions into a `Plan` that the store plays out over time. The rules are listed in README.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

SPEC_ERROR_CODES = ("server_error", "rate_limit_exceeded", "invalid_prompt")
CITATION_MARKER = "【4:0†source】"
CITATION_FILE_ID = "file-abc123"
IMAGE_FILE_ID = "file-img123"
SLOW_TOOL = "slow_lookup"

_CALL = re.compile(r"call:([A-Za-z_][A-Za-z0-9_.-]*)")
_FAIL = re.compile(r"fail:([A-Za-z0-9_.-]+)")
_EXPIRE = re.compile(r"(?<![\w:])expire(:now)?(?![\w-])")
_SLEEP = re.compile(r"sleep:(\d+(?:\.\d*)?|\.\d+)")
_PREFIX = re.compile(r"prefix:(\S+)")
_EQUATION = re.compile(r"(?<![\w.])(-?\d*)([a-z])\s*(?:([+-])\s*(\d+)\s*)?=\s*(-?\d+)(?!\w|\.\d)")
_ERROR_MESSAGES = {
    "server_error": "Sorry, something went wrong.",
    "rate_limit_exceeded": "You exceeded your current quota (emulated).",
    "invalid_prompt": "The prompt was flagged as invalid (emulated).",
}


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: str  # a JSON object, as a string


@dataclass(frozen=True)
class HostedCall:
    type: str  # "code_interpreter" or "file_search"
    detail: dict[str, Any]  # the wire object under the key named by `type`


@dataclass(frozen=True)
class Plan:
    """What a run will do when its time is up."""

    outcome: str  # completed | requires_action | failed | expired | incomplete
    replies: tuple[tuple[dict[str, Any], ...], ...] = ()  # content parts of each assistant message
    function_calls: tuple[FunctionCall, ...] = ()
    hosted_calls: tuple[HostedCall, ...] = ()
    short_deadline: bool = False  # the `expire` rule: requires_action with a deadline of seconds
    error_code: str | None = None
    error_message: str | None = None
    duration: float | None = None  # `sleep:S`
    prefix: str = ""
    prompt_tokens: int = 0


def plan_run(texts: Sequence[str], instructions: str, *, spec_error_codes: bool = True) -> Plan:
    """The plan for a run that answers `texts` (the user messages of its batch)."""
    joined = "\n".join(texts)
    prefix = _prefix(instructions)
    common: dict[str, Any] = {
        "duration": _sleep(joined),
        "prefix": prefix,
        "prompt_tokens": count_tokens(instructions) + count_tokens(joined),
    }
    expire = _EXPIRE.search(joined)
    fail = _FAIL.search(joined)
    calls = _function_calls(joined)
    if expire and expire.group(1):
        return Plan("expired", **common)
    if fail:
        code, message = _error(fail.group(1), spec_error_codes)
        return Plan("failed", error_code=code, error_message=message, **common)
    if expire:
        return Plan("requires_action", function_calls=(FunctionCall(SLOW_TOOL, "{}"),), short_deadline=True, **common)
    if calls:
        return Plan("requires_action", function_calls=calls, **common)
    reply = prefix + reply_text(texts)
    words = set(re.findall(r"[a-z_]+", joined))
    if "incomplete" in words:
        return Plan("incomplete", replies=((_text_part(reply[: max(1, len(reply) // 2)]),),), **common)
    return Plan("completed", replies=_replies(reply, words), hosted_calls=_hosted_calls(words), **common)


def failure_plan(plan: Plan, code: str, *, spec_error_codes: bool = True) -> Plan:
    """`plan` turned into a failure (the fault switch's fail_rate)."""
    code, message = _error(code, spec_error_codes)
    return Plan("failed", error_code=code, error_message=message, duration=plan.duration, prefix=plan.prefix,
                prompt_tokens=plan.prompt_tokens)


def expiry_plan(plan: Plan) -> Plan:
    """`plan` turned into a straight expiry (the fault switch's expire_rate)."""
    return Plan("expired", duration=plan.duration, prefix=plan.prefix, prompt_tokens=plan.prompt_tokens)


def tool_results_reply(prefix: str, results: Sequence[tuple[str, str]]) -> tuple[dict[str, Any], ...]:
    """The message that ends a run after its tool outputs came back."""
    listed = "; ".join(f"{name} -> {output}" for name, output in results)
    return (_text_part(f"{prefix}Tool results: {listed}"),)


def reply_text(texts: Sequence[str]) -> str:
    """The equation's solution if there is one, and every text of the batch (when more than one)."""
    echo = "You said: " + ("\n".join(texts) if texts else "(no new messages)")
    for text in texts:
        solution = solve_linear(text)
        if solution is not None:
            return solution if len(texts) == 1 else f"{solution}\n\n{echo}"
    return echo


def solve_linear(text: str) -> str | None:
    """A worked answer for the first `ax + b = c` (integers) in `text`, or None."""
    match = _EQUATION.search(text)
    if match is None:
        return None
    coef_text, var, sign, b_text, c_text = match.groups()
    a = -1 if coef_text == "-" else int(coef_text or 1)
    if a == 0:
        return None
    c = int(c_text)
    ax = f"{_coef(a)}{var}"
    if sign is None:
        if a == 1:
            return None  # `x = 3` is no equation to solve
        return f"To solve {ax} = {c}, divide both sides by {a}: {var} = {Fraction(c, a)}."
    b = int(b_text)
    rhs = c - b if sign == "+" else c + b
    move = f"subtract {b} from" if sign == "+" else f"add {b} to"
    answer = f"To solve {ax} {sign} {b} = {c}, {move} both sides: {ax} = {rhs}."
    if a != 1:
        answer += f" Then divide by {a}: {var} = {Fraction(rhs, a)}."
    return answer


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: one token per 4 characters."""
    return (len(text) + 3) // 4


def _coef(a: int) -> str:
    return {1: "", -1: "-"}.get(a, str(a))


def _prefix(instructions: str) -> str:
    match = _PREFIX.search(instructions or "")
    return match.group(1) + " " if match else ""


def _sleep(text: str) -> float | None:
    match = _SLEEP.search(text)
    return float(match.group(1)) if match else None


def _error(code: str, spec_error_codes: bool) -> tuple[str, str]:
    """last_error's code and message; the spec allows three codes, the loose flavour any."""
    if code in _ERROR_MESSAGES:
        return code, _ERROR_MESSAGES[code]
    return ("server_error" if spec_error_codes else code), f"Emulated failure ({code})."


def _function_calls(text: str) -> tuple[FunctionCall, ...]:
    decoder = json.JSONDecoder()
    calls = []
    for match in _CALL.finditer(text):
        arguments: Any = {}
        if text.startswith("{", match.end()):
            try:
                arguments, _ = decoder.raw_decode(text, match.end())
            except ValueError:
                arguments = {}
        calls.append(FunctionCall(match.group(1), json.dumps(arguments, separators=(",", ":"))))
    return tuple(calls)


def _text_part(value: str, annotations: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": list(annotations)}}


def _replies(reply: str, words: set[str]) -> tuple[tuple[dict[str, Any], ...], ...]:
    if "file_search" in words:
        start = len(reply) + 1
        reply = f"{reply} {CITATION_MARKER}"
        citation = {
            "type": "file_citation",
            "text": CITATION_MARKER,
            "file_citation": {"file_id": CITATION_FILE_ID},
            "start_index": start,
            "end_index": start + len(CITATION_MARKER),
        }
        first: tuple[dict[str, Any], ...] = (_text_part(reply, [citation]),)
    else:
        first = (_text_part(reply),)
    if "image" in words:
        first = ({"type": "image_file", "image_file": {"file_id": IMAGE_FILE_ID, "detail": "auto"}}, *first)
    if "twice" in words:
        return (first, (_text_part("And one more thing: you asked me to answer twice."),))
    return (first,)


def _hosted_calls(words: set[str]) -> tuple[HostedCall, ...]:
    calls = []
    if "code_interpreter" in words:
        calls.append(HostedCall("code_interpreter",
                                {"input": "print(1+1)", "outputs": [{"type": "logs", "logs": "2"}]}))
    if "file_search" in words:
        calls.append(HostedCall("file_search", {
            "ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.0},
            "results": [{"file_id": CITATION_FILE_ID, "file_name": "source.txt", "score": 0.9}],
        }))
    return tuple(calls)
