"""Checks and normalises request bodies and list queries; raises ApiError(400) on bad input."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
SUBMIT_FIELDS = frozenset({"tool_outputs", "stream"})


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


def require(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], prefix: str = "") -> Any:
    value = body.get(name)
    if value is None:
        raise bad_request(f"Missing required parameter: '{prefix}{name}'.", param=prefix + name,
                          code="missing_required_parameter")
    return expect(value, kind, prefix + name)


def optional(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name)
    return default if value is None else expect(value, kind, name)


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


def message_input(body: Any, strict: bool, prefix: str = "") -> MessageInput:
    """A createMessage body (or one of `messages` / `additional_messages`)."""
    if not isinstance(body, dict):
        raise bad_request(f"Invalid type for '{prefix or 'body'}': expected an object.", param=prefix or None)
    known_fields(body, MESSAGE_FIELDS, strict, prefix)
    role = require(body, "role", str, prefix)
    if role not in ("user", "assistant"):
        raise bad_request(f"Invalid value for '{prefix}role': expected 'user' or 'assistant'.", param=prefix + "role")
    parts, text = _content(require(body, "content", (str, list), prefix), prefix + "content")
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
