"""Reading a thread (Assistants) or a conversation (Responses) back from the emulator, to
check what was appended to it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def _pages(base_url: str, path: str) -> list[dict[str, Any]]:
    """Every item of a list endpoint, oldest first, as raw JSON (loose servers may return
    content as a plain string, which the SDK's typed objects misread)."""
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {"order": "asc", "limit": 100}
    while True:
        request = urllib.request.Request(f"{base_url}{path}?{urllib.parse.urlencode(query)}",
                                         headers={"Authorization": "Bearer sk-test-reader",
                                                  "OpenAI-Beta": "assistants=v2"})
        page = _get(request)
        items.extend(page["data"])
        if not page.get("has_more"):
            return items
        query["after"] = page["data"][-1]["id"]


def _get(request: urllib.request.Request) -> Any:
    """One GET, tried again on the faults the emulator may be injecting (429, 5xx)."""
    for attempt in range(10):
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as exc:
            exc.close()
            if (exc.code != 429 and exc.code < 500) or attempt == 9:
                raise
        time.sleep(0.05)  # the injected faults are random: just ask again


def thread_messages(base_url: str, thread_id: str) -> list[dict[str, Any]]:
    """Every message of an Assistants thread, oldest first."""
    return _pages(base_url, f"/threads/{thread_id}/messages")


def conversation_items(base_url: str, conversation_id: str) -> list[dict[str, Any]]:
    """Every item of a Responses conversation, oldest first."""
    return _pages(base_url, f"/conversations/{conversation_id}/items")


def user_texts(base_url: str, backend: str, thread_id: str) -> list[str]:
    """The texts of the user messages of a thread or conversation, in order."""
    if backend == "responses":
        items = conversation_items(base_url, thread_id)
        messages = [i for i in items if i.get("type") == "message" and i.get("role") == "user"]
    else:
        messages = [m for m in thread_messages(base_url, thread_id) if m["role"] == "user"]
    return [_text(m["content"]) for m in messages]


def text_of(item: dict[str, Any]) -> str:
    """A message item's text, whatever its content's shape."""
    return _text(item.get("content") or "")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        text = part.get("text")
        parts.append(text.get("value", "") if isinstance(text, dict) else str(text or ""))
    return "".join(parts)
