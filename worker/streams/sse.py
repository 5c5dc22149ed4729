"""Server-sent events, as the API sends them: `event:` and `data:` lines, a blank line ends one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    name: str  # the `event:` field ("" when absent: Responses names its events in `type`)
    data: Any  # the decoded JSON of `data:`, or its text when it is not JSON (`[DONE]`)


def decode(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


async def events(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """The events of a stream of lines (comments and `id:`/`retry:` fields ignored)."""
    name, data = "", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield Event(name, decode("\n".join(data)))
            name, data = "", []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            name = line[6:].strip()
    if data:
        yield Event(name, decode("\n".join(data)))
