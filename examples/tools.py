"""The README's tool: listed in WORKER_TOOL_MODULES=examples.tools (as local.env does), the
model may call get_weather; the emulator's model calls it for `call:get_weather{...}`."""

from __future__ import annotations

from typing import Literal

from worker.tools import tool


@tool
def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, object]:
    """Current weather for a city."""
    return {"city": city, "temperature": 21 if unit == "c" else 70, "unit": unit}
