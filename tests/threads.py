"""Reading a thread back from the emulator, to check what was appended to it."""

from __future__ import annotations

import json
from typing import Any

import openai


def thread_messages(base_url: str, thread_id: str) -> list[dict[str, Any]]:
    """Every message of the thread, oldest first, as raw JSON (loose servers may return
    content as a plain string, which the SDK's typed objects misread)."""
    client = openai.OpenAI(base_url=base_url, api_key="sk-test-reader")
    messages: list[dict[str, Any]] = []
    after: dict[str, str] = {}
    while True:
        raw = client.beta.threads.messages.with_raw_response.list(
            thread_id, order="asc", limit=100, **after)
        page = json.loads(raw.text)
        messages.extend(page["data"])
        if not page.get("has_more"):
            return messages
        after = {"after": page["data"][-1]["id"]}
