"""The tool the cost benchmark's runs call (`call:add{"a": 1, "b": 2}`), via WORKER_TOOL_MODULES=bench.tools."""

from __future__ import annotations

from worker.tools import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
