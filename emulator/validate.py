"""Checks and normalises request bodies and list queries; raises ApiError(400) on bad input."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .errors import bad_request

ASSISTANT_FIELDS = frozenset({
    "model", "name", "description", "instructions", "reasoning_effort", "tools", "tool_resources",
    "metadata", "temperature", "top_p", "response_format",
})
THREAD_FIELDS = frozenset({"messages", "tool_resources", "metadata"})
MESSAGE_FIELDS = frozenset({"role", "content", "attachments", "metadata"})
RUN_FIELDS = frozenset({
    "assistant_id", "model", "reasoning_effort", "instructions", "additional_instructions",
    "additional_messages", "tools", "metadata", "temperature", "top_p", "stream", "max_prompt_tokens",
    "max_completion_tokens", "truncation_strategy", "tool_choice", "parallel_tool_calls", "response_format",
})
# createThreadAndRun: the run's fields but the additional ones, plus the thread to create.
THREAD_AND_RUN_FIELDS = (RUN_FIELDS - {"additional_messages", "additional_instructions", "reasoning_effort"}
                         | {"thread", "tool_resources"})
SUBMIT_FIELDS = frozenset({"tool_outputs", "stream"})

T = TypeVar("T")
ASSISTANTS_MAX_CHARS = 256_000  # OpenAI's longest message content (Assistants API)
RESPONSES_MAX_CHARS = 10_485_760  # OpenAI's longest input text of a response


@dataclass
class MessageInput:
    role: str
    content: list[dict[str, Any]]  # wire content parts
    text: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ListQuery:
    limit: int = 20
    order: str = "desc"
    after: str | None = None
    before: str | None = None


def known_fields(body: Mapping[str, Any], allowed: frozenset[str], strict: bool, prefix: str = "") -> None:
    """In the strict flavour, reject a field the request schema does not have, as OpenAI does."""
    if not strict:
        return
    for name in body:
        if name not in allowed:
            raise bad_request(f"Unrecognized request argument supplied: {prefix}{name}", code="unknown_parameter")


@overload
def require(body: Mapping[str, Any], name: str, kind: type[T], prefix: str = "") -> T: ...
@overload
def require(body: Mapping[str, Any], name: str, kind: tuple[type, ...], prefix: str = "") -> Any: ...
def require(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], prefix: str = "") -> Any:
    value = body.get(name)
    if value is None:
        raise bad_request(f"Missing required parameter: '{prefix}{name}'.", param=prefix + name,
                          code="missing_required_parameter")
    return expect(value, kind, prefix + name)


def optional(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name)
    return default if value is None else expect(value, kind, name)


@overload
def expect(value: Any, kind: type[T], param: str) -> T: ...
@overload
def expect(value: Any, kind: tuple[type, ...], param: str) -> Any: ...
def expect(value: Any, kind: type | tuple[type, ...], param: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise bad_request(f"Invalid type for '{param}'.", param=param, code="invalid_type")
    if not isinstance(value, kind):
        raise bad_request(f"Invalid type for '{param}'.", param=param, code="invalid_type")
    return value


def metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 16:
        raise bad_request(f"Invalid '{param}': an object of at most 16 string pairs.", param=param)
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 64 or len(item) > 512:
            raise bad_request(f"Invalid '{param}.{key}': keys up to 64, values up to 512 characters.", param=param)
    return dict(value)


def max_length(text: str, limit: int, param: str) -> None:
    """OpenAI's answer to a text longer than the API takes."""
    if len(text) > limit:
        raise bad_request(f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, "
                          f"but got a string with length {len(text)} instead.", param=param,
                          code="string_above_max_length")


def message_input(body: Any, strict: bool, prefix: str = "", max_chars: int = ASSISTANTS_MAX_CHARS) -> MessageInput:
    """A createMessage body (or one of `messages` / `additional_messages`)."""
    if not isinstance(body, dict):
        raise bad_request(f"Invalid type for '{prefix or 'body'}': expected an object.", param=prefix or None)
    known_fields(body, MESSAGE_FIELDS, strict, prefix)
    role = require(body, "role", str, prefix)
    if role not in ("user", "assistant"):
        raise bad_request(f"Invalid value for '{prefix}role': expected 'user' or 'assistant'.", param=prefix + "role")
    parts, text = _content(require(body, "content", (str, list), prefix), prefix + "content")
    max_length(text, max_chars, prefix + "content")
    attachments = body.get("attachments") or []
    expect(attachments, list, prefix + "attachments")
    return MessageInput(role, parts, text, list(attachments), metadata(body.get("metadata"), prefix + "metadata"))


def list_query(query: Mapping[str, str]) -> ListQuery:
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        raise bad_request("Invalid 'limit': expected an integer.", param="limit") from None
    if not 1 <= limit <= 100:
        raise bad_request("Invalid 'limit': must be between 1 and 100.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    return ListQuery(limit, order, query.get("after") or None, query.get("before") or None)


def _content(content: str | list[Any], param: str) -> tuple[list[dict[str, Any]], str]:
    if isinstance(content, str):
        return [_text_part(content)], content
    if not content:
        raise bad_request(f"Invalid '{param}': expected at least one content part.", param=param)
    parts, texts = [], []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(_text_part(part["text"]))
            texts.append(part["text"])
        elif kind in ("image_file", "image_url") and isinstance(part.get(kind), dict):
            parts.append({"type": kind, kind: dict(part[kind])})
        else:
            raise bad_request(f"Invalid content part '{param}[{index}]'.", param=f"{param}[{index}]")
    return parts, "\n".join(texts)


def _text_part(value: str) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": []}}


# -- Responses and Conversations APIs ---------------------------------------------------------------

CONVERSATION_FIELDS = frozenset({"metadata", "items"})
CONVERSATION_ITEMS_FIELDS = frozenset({"items"})
RESPONSE_FIELDS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_tool_calls", "text",
    "temperature", "top_p", "top_logprobs", "metadata", "user", "safety_identifier", "prompt_cache_key",
    "prompt_cache_retention", "prompt_cache_options", "previous_response_id", "conversation", "background",
    "store", "stream", "stream_options", "include", "max_output_tokens", "reasoning", "service_tier", "truncation",
    "prompt", "moderation", "context_management",
    # sent by newer SDKs, not (yet) in the spec's CreateResponse
    "access_programs", "background_options", "image",
})
MAX_CONVERSATION_ITEMS = 20  # per createConversation / createConversationItems call
_MESSAGE_ITEM_FIELDS = frozenset({"type", "id", "role", "content", "status", "phase"})
_FUNCTION_CALL_FIELDS = frozenset({"type", "id", "call_id", "name", "arguments", "status", "namespace", "caller"})
_FUNCTION_OUTPUT_FIELDS = frozenset({"type", "id", "call_id", "output", "status", "name", "namespace", "caller"})
_INPUT_ROLES = ("user", "assistant", "system", "developer")


@dataclass
class InputItem:
    """One item of a createResponse `input` (or a conversation's `items`), normalised."""

    type: str  # message | function_call | function_call_output
    role: str | None = None
    content: list[dict[str, Any]] = field(default_factory=list)  # Responses-shape parts
    text: str = ""
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: Any = None  # a string, or a list of content parts
    output_text: str = ""  # the output as text (for the after-tools reply)


def response_input(value: Any, strict: bool, param: str = "input") -> list[InputItem]:
    """A createResponse `input`: a string (one user message) or a list of input items."""
    if value is None:
        return []
    if isinstance(value, str):
        return [InputItem("message", "user", [_input_text(value)], value)]
    if not isinstance(value, list):
        raise bad_request(f"Invalid type for '{param}': expected a string or an array of input items.",
                          param=param, code="invalid_type")
    return [input_item(item, strict, f"{param}[{index}]") for index, item in enumerate(value)]


def input_lengths(inputs: list[InputItem], limit: int, param: str = "input") -> None:
    for index, item in enumerate(inputs):
        if item.type == "message":
            max_length(item.text, limit, f"{param}[{index}].content")


def input_item(body: Any, strict: bool, param: str) -> InputItem:
    if not isinstance(body, dict):
        raise bad_request(f"Invalid type for '{param}': expected an object.", param=param, code="invalid_type")
    kind = body.get("type", "message" if "role" in body else None)
    prefix = param + "."
    if kind == "message":
        known_fields(body, _MESSAGE_ITEM_FIELDS, strict, prefix)
        role = require(body, "role", str, prefix)
        if role not in _INPUT_ROLES:
            raise bad_request(f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', 'system', and "
                              "'developer'.", param=prefix + "role", code="invalid_value")
        parts, text = _response_content(require(body, "content", (str, list), prefix), role, prefix + "content")
        return InputItem("message", role, parts, text)
    if kind == "function_call_output":
        known_fields(body, _FUNCTION_OUTPUT_FIELDS, strict, prefix)
        call_id = require(body, "call_id", str, prefix)
        output = require(body, "output", (str, list), prefix)
        if isinstance(output, str):
            text = output
        else:
            texts = [part.get("text") for part in output if isinstance(part, dict)]
            text = "\n".join(t for t in texts if isinstance(t, str))
        return InputItem("function_call_output", call_id=call_id, output=output, output_text=text)
    if kind == "function_call":
        known_fields(body, _FUNCTION_CALL_FIELDS, strict, prefix)
        return InputItem("function_call", call_id=require(body, "call_id", str, prefix),
                         name=require(body, "name", str, prefix), arguments=require(body, "arguments", str, prefix))
    if kind is None:
        raise bad_request(f"Missing required parameter: '{prefix}type'.", param=prefix + "type",
                          code="missing_required_parameter")
    raise bad_request(f"Invalid value: '{kind}'. The emulator supports input items of type 'message', "
                      "'function_call' and 'function_call_output'.", param=prefix + "type", code="invalid_value")


def response_tools(value: Any) -> list[dict[str, Any]]:
    """createResponse `tools`: function tools in the Responses shape (name at the top level)."""
    if value is None:
        return []
    expect(value, list, "tools")
    tools = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        expect(tool, dict, param)
        kind = require(tool, "type", str, param + ".")
        if kind != "function":
            tools.append(dict(tool))
            continue
        name = require(tool, "name", str, param + ".")
        tools.append({"type": "function", "name": name, "description": tool.get("description"),
                      "parameters": tool.get("parameters"), "strict": tool.get("strict", True)})
    return tools


def conversation_param(value: Any, allow_object: bool) -> str | None:
    """createResponse `conversation`: an id, or (strict) {"id": ...}."""
    if value is None or isinstance(value, str):
        return value
    if allow_object and isinstance(value, dict):
        return require(value, "id", str, "conversation.")
    expected = "a string or an object with an 'id'" if allow_object else "a string (the conversation's id)"
    raise bad_request(f"Invalid type for 'conversation': expected {expected}.", param="conversation",
                      code="invalid_type")


def _response_content(content: str | list[Any], role: str, param: str) -> tuple[list[dict[str, Any]], str]:
    if isinstance(content, str):
        part = _output_text(content) if role == "assistant" else _input_text(content)
        return [part], content
    parts, texts = [], []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            parts.append(_input_text(part["text"]) if kind == "input_text" else _output_text(part["text"]))
            texts.append(part["text"])
        elif kind in ("input_image", "input_file"):
            parts.append(dict(part))
        else:
            raise bad_request(f"Invalid content part '{param}[{index}]': the emulator takes 'input_text', "
                              "'output_text', 'input_image' and 'input_file' parts.", param=f"{param}[{index}]",
                              code="invalid_value")
    return parts, "\n".join(texts)


def _input_text(value: str) -> dict[str, Any]:
    return {"type": "input_text", "text": value}


def _output_text(value: str) -> dict[str, Any]:
    return {"type": "output_text", "text": value, "annotations": [], "logprobs": []}


RESPONSE_SETTING_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "parallel_tool_calls": True,
    "max_output_tokens": None, "max_tool_calls": None, "top_logprobs": 0, "truncation": "disabled",
    "service_tier": "auto", "reasoning": None, "prompt_cache_key": None, "safety_identifier": None,
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
}


def response_settings(body: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a response echoes: as sent, else OpenAI's defaults."""
    return {name: default if body.get(name) is None else body[name]
            for name, default in RESPONSE_SETTING_DEFAULTS.items()}
