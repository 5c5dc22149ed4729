"""Tools the end-to-end tests register through WORKER_TOOL_MODULES."""

from __future__ import annotations

import threading
import time
from typing import Literal

from worker.tools import tool

CALLS: list[str] = []
_lock = threading.Lock()


@tool
def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict:
    """Current weather for a city."""
    with _lock:
        CALLS.append(f"get_weather:{city}")
    return {"city": city, "temperature": 21 if unit == "c" else 70, "unit": unit}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    with _lock:
        CALLS.append(f"add:{a}+{b}")
    return a + b


@tool
def explode() -> str:
    """Always raises."""
    raise RuntimeError("the tool blew up")


@tool
def slow_lookup(seconds: float = 5.0) -> str:
    """Sleeps longer than the tests' tool timeout."""
    time.sleep(seconds)
    return "late"


@tool
def big_output(size: int) -> str:
    """Returns `size` characters."""
    return "x" * size
