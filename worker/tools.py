"""Function tools: `@tool` registers a function the model may call.

Arguments are validated from the type hints; the JSON of the return value is the output.
An unknown tool, invalid arguments, an exception or a timeout becomes an error output for
the model (`{"error": {"type", "message"}}`), never a crashed run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import inspect
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from worker.backends.base import ToolCall
from worker.errors import ToolRegistryError

UNKNOWN_TOOL = "_unknown"


@dataclass(frozen=True)
class Tool:
    name: str
    function: Callable[..., Any]
    description: str
    arguments: type[BaseModel]

    def definition(self) -> dict[str, Any]:
        """The function definition sent to the API."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": schema}}


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    tool: str  # registered name, or UNKNOWN_TOOL
    outcome: str  # ok, error, timeout, invalid_arguments
    output: str
    duration: float


REGISTRY: dict[str, Tool] = {}


def tool(function: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Register `function` as a tool (usable as `@tool` or `@tool(name=...)`)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or fn.__name__
        existing = REGISTRY.get(tool_name)
        if existing is not None and existing.function is not fn:
            raise ToolRegistryError(f"tool {tool_name!r} is registered twice")
        REGISTRY[tool_name] = Tool(tool_name, fn, inspect.getdoc(fn) or "", _arguments_model(fn))
        return fn

    return register(function) if function is not None else register


def _arguments_model(fn: Callable[..., Any]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    hints = inspect.get_annotations(fn, eval_str=True)
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    config = ConfigDict(extra="forbid")
    return create_model(f"{fn.__name__}_arguments", __config__=config, **fields)


def load_tool_modules(modules: Iterable[str]) -> list[str]:
    """Import the modules of WORKER_TOOL_MODULES; returns the registered tool names."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ToolRegistryError(_import_failure(module, exc)) from exc
    return sorted(REGISTRY)


def _import_failure(module: str, exc: ImportError) -> str:
    """Why a tool module did not import, and what makes it importable."""
    what = f"cannot import tool module {module!r} (WORKER_TOOL_MODULES)"
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing and (module == missing or module.startswith(missing + ".")):
        top = missing.split(".")[0]
        return (f"{what}: no module named {missing!r} in the current directory or on PYTHONPATH: run "
                f"from the folder that holds {top}/, or add that folder to PYTHONPATH")
    if missing:
        return f"{what}: it imports {missing!r}, which is not installed: install it"
    return f"{what}: {exc}"


def definitions() -> list[dict[str, Any]]:
    return [REGISTRY[name].definition() for name in sorted(REGISTRY)]


class ToolRunner:
    """Runs the tool calls of one step concurrently, each bounded by the timeout.

    A timed-out tool keeps its thread until it returns (Python cannot kill a thread), so
    the pool is shared and sized generously; the run continues without waiting for it.
    """

    def __init__(self, timeout: float, max_output_chars: int = 32_000, max_workers: int = 32) -> None:
        self.timeout = timeout
        self.max_output_chars = max_output_chars
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="tool")

    def run(self, calls: list[ToolCall]) -> list[ToolResult]:
        started = time.monotonic()
        futures = [self._pool.submit(_execute, call) for call in calls]
        results = []
        for call, future in zip(calls, futures, strict=True):
            remaining = max(0.0, self.timeout - (time.monotonic() - started))
            try:
                results.append(future.result(timeout=remaining))
            except concurrent.futures.TimeoutError:
                results.append(ToolResult(call.id, _registered_name(call.name), "timeout", _error_output(
                    "timeout", f"tool {call.name!r} did not finish within {self.timeout:g} s"),
                    time.monotonic() - started))
        return [truncated(r, self.max_output_chars) for r in results]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


TRUNCATION_MARKER = "…[truncated {dropped} characters]"


def truncated(result: ToolResult, limit: int) -> ToolResult:
    """Cut an output longer than `limit`, ending it with a marker the model can read."""
    if len(result.output) <= limit:
        return result
    marker = TRUNCATION_MARKER.format(dropped=len(result.output) - limit)
    output = result.output[: max(0, limit - len(marker))] + marker
    return dataclasses.replace(result, output=output)


def _registered_name(name: str) -> str:
    return name if name in REGISTRY else UNKNOWN_TOOL


def _execute(call: ToolCall) -> ToolResult:
    started = time.monotonic()
    registered = REGISTRY.get(call.name)

    def result(outcome: str, output: str) -> ToolResult:
        return ToolResult(call.id, _registered_name(call.name), outcome, output, time.monotonic() - started)

    if registered is None:
        return result("error", _error_output("unknown_tool", f"there is no tool named {call.name!r}"))
    try:
        arguments = registered.arguments.model_validate(json.loads(call.arguments or "{}"))
    except ValidationError as exc:
        return result("invalid_arguments", _error_output("invalid_arguments", invalid_arguments_message(exc)))
    except ValueError as exc:
        return result("invalid_arguments", _error_output("invalid_arguments", f"invalid arguments: not JSON ({exc})"))
    try:
        value = registered.function(**{k: getattr(arguments, k) for k in type(arguments).model_fields})
        return result("ok", value if isinstance(value, str) else json.dumps(value, default=str))
    except Exception as exc:  # noqa: BLE001 - any failure of user code becomes an error output
        return result("error", _error_output("exception", f"{type(exc).__name__}: {exc}"))


# pydantic's wording where it is not plain for the model (a message about a model class).
_PLAIN = {"missing": "required", "extra_forbidden": "not an argument of this tool",
          "model_type": "must be a JSON object", "dict_type": "must be a JSON object"}
_MAX_PROBLEMS = 5


def invalid_arguments_message(exc: ValidationError) -> str:
    """Each field and what was wrong with it, in plain words: no pydantic type codes, echoed
    input or documentation links (pydantic's own text has all three)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    problems = []
    for error in errors[:_MAX_PROBLEMS]:
        field = ".".join(str(part) for part in error["loc"])
        what = _PLAIN.get(error["type"], error["msg"])[:200]
        problems.append(f"{field}: {what}" if field else what)
    more = f" (and {len(errors) - _MAX_PROBLEMS} more)" if len(errors) > _MAX_PROBLEMS else ""
    return "invalid arguments: " + "; ".join(problems) + more


def _error_output(kind: str, message: str) -> str:
    return json.dumps({"error": {"type": kind, "message": message}})
