"""Backends speak to one assistant API; everything above them is shared."""

from worker.backends.base import RunBackend, RunState, ToolCall

__all__ = ["RunBackend", "RunState", "ToolCall"]
