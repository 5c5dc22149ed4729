"""Helpers the scenarios share: checking replies, emulator call counts, CPU figures."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from bench.load import Reply


def outcome_counts(replies: list[Reply]) -> dict[str, int]:
    return dict(Counter(reply.data.get("type", "?") for reply in replies))


def completed(replies: list[Reply]) -> int:
    return sum(1 for reply in replies if reply.data.get("type") == "run.completed")


def api_calls(before: dict[str, Any], after: dict[str, Any], runs: int) -> dict[str, Any]:
    """Emulator calls between two stats per run: all, polls (getRun), tool submissions, the others."""
    earlier: dict[str, int] = before.get("calls", {})
    calls = {op: n - earlier.get(op, 0) for op, n in after.get("calls", {}).items() if n - earlier.get(op, 0)}
    total = sum(calls.values())
    polls = calls.get("getRun", 0)
    tools = calls.get("submitToolOuputsToRun", 0)

    def per(n: int) -> float | None:
        return round(n / runs, 2) if runs else None

    return {"calls": calls, "runs": runs, "calls_per_run": per(total), "polls_per_run": per(polls),
            "tool_submissions_per_run": per(tools), "other_calls_per_run": per(total - polls - tools),
            "other_calls_by_operation_per_run": {op: per(n) for op, n in sorted(calls.items())
                                                 if op not in ("getRun", "submitToolOuputsToRun")}}


def cpu_percent(used: dict[str, float]) -> dict[str, float]:
    """CPU seconds of each group over a window -> % of one core (`others`: the rest of the machine)."""
    wall = used["wall"]
    return {name: round(100.0 * seconds / wall, 1) for name, seconds in used.items() if name != "wall"}


def polled() -> dict[str, str]:
    """The worker settings of the scenarios that measure the polled path (all but streaming,
    whose figures and targets were set for runs followed by polls): STREAMING=off, unless the
    environment sets STREAMING (e.g. `python -m bench compare ... --env STREAMING=auto`)."""
    return {"STREAMING": os.environ.get("STREAMING", "off")}
