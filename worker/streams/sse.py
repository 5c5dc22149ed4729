"""Server-sent events, as the API sends them: `event:` and `data:` lines, a blank line ends
one. Read from the raw bytes (cheaper than line by line), and each event's JSON decoded
only when asked for: most events of a run's stream (steps, parts, items) need only their name."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Event:
    name: str  # the `event:` field ("" when absent: Responses names its events in `type` too)
    raw: bytes  # the `data:` lines

    @cached_property
    def data(self) -> Any:
        """The decoded JSON of `data:`, or its text when it is not JSON (`[DONE]`)."""
        try:
            return json.loads(self.raw)
        except ValueError:
            return self.raw.decode(errors="replace")


def _event(block: bytes) -> Event | None:
    name, data = "", list[bytes]()
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
    return Event(name, b"\n".join(data)) if data else None


async def events(chunks: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """The events of a stream of byte chunks (comments and `id:`/`retry:` fields ignored)."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        *blocks, buffer = buffer.split(b"\n\n")
        for block in blocks:
            event = _event(block)
            if event is not None:
                yield event
    last = _event(buffer.strip(b"\n"))
    if last is not None:
        yield last
