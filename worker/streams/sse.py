"""Server-sent events, as the API sends them: `event:` and `data:` lines, a blank line ends
one. Parsed from the raw bytes as they come, synchronously (a reader handles a chunk's
events in one go), and each event's JSON decoded only when asked for: most events of a
run's stream (steps, parts, items) need only their name."""

from __future__ import annotations

import re
from typing import Any

import orjson

# The usual event, one `event:` line and one `data:` line, matched in one go.
_USUAL = re.compile(rb"event: ?([^\n]*)\ndata: ?([^\n]*)")


class Event:
    __slots__ = ("name", "raw")

    def __init__(self, name: str, raw: bytes) -> None:
        self.name = name  # the `event:` field ("" when absent: Responses names its events in `type` too)
        self.raw = raw  # the `data:` lines

    @property
    def data(self) -> Any:
        """The decoded JSON of `data:`, or its text when it is not JSON (`[DONE]`)."""
        try:
            return orjson.loads(self.raw)
        except ValueError:  # orjson.JSONDecodeError is one
            return self.raw.decode(errors="replace")


def _event(block: bytes) -> Event | None:
    usual = _USUAL.fullmatch(block)
    if usual is not None:
        return Event(usual[1].strip().decode(), usual[2])
    name, data = "", list[bytes]()
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
    if not data:
        return None
    return Event(name, data[0] if len(data) == 1 else b"\n".join(data))


class Parser:
    """Bytes in as they come, complete events out (comments and `id:`/`retry:` ignored)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._rest + chunk if self._rest else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        *blocks, self._rest = buffer.split(b"\n\n")
        return [event for block in blocks if (event := _event(block)) is not None]

    def end(self) -> list[Event]:
        """The last event, should the stream have ended without its blank line."""
        last, self._rest = _event(self._rest.strip(b"\n")), b""
        return [last] if last is not None else []
