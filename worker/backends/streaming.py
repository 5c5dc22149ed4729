"""The backends' creates (and tool-output submissions, and re-attaches) sent as event
streams where the server streams (STREAMING, a capability: capabilities.py). A server that
refuses `stream`, or answers JSON instead of an event stream, is learnt not to stream, and
its runs are polled; so is every run once the process has STREAM_MAX_OPEN streams open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.backends.base import RunState, StreamTarget
from worker.capabilities import Capability, CapabilityStore
from worker.errors import PermanentApiError, RequestRefusedError
from worker.streams.events import Parse, Translator
from worker.streams.streams import Opened, OpenRequest, Streams


class StreamedCalls:
    def __init__(self, streams: Streams | None, known: CapabilityStore) -> None:
        self.streams = streams
        self.known = known

    def available(self) -> bool:
        """Whether a call may be sent as a stream now (the server streams, the process has room)."""
        return self.streams is not None and self.known.supports(Capability.STREAM) and self.streams.can_open()

    def post(self, operation: str, path: str, body: dict[str, Any], target: StreamTarget | None,
             translator: Callable[[], Translator], parse: Parse,
             run_id: str | None = None) -> Opened | None:
        """The call sent as a stream; None when it is not (send it plainly). A JSON answer
        is the call's answer all the same (`owner` None)."""
        if target is None or self.streams is None or not self.available():
            return None
        request = OpenRequest(operation, "POST", path, {**body, "stream": True}, target, translator(), parse,
                              run_id=run_id)
        try:
            opened = self.streams.open(request)
        except RequestRefusedError as exc:
            if "stream" not in str(exc).lower():
                raise
            self.known.learn(Capability.STREAM, False, f"{operation} refused stream: {exc}")
            return None  # refused: nothing was created
        if opened.owner is None:
            self.known.learn(Capability.STREAM, False, f"{operation} answered JSON, not an event stream")
        return opened

    def resume(self, path: str, target: StreamTarget, translator: Callable[[], Translator],
               parse: Parse, run_id: str) -> str | None:
        """Re-attach to a run's stream (GET `path`); the new stream's owner, or None when the
        server refuses (learnt: its runs are polled) or nothing streams."""
        if self.streams is None or not self.available():
            return None
        request = OpenRequest("responses.stream", "GET", path, None, target, translator(), parse, run_id=run_id)
        try:
            opened = self.streams.open(request)
        except PermanentApiError as exc:
            self.known.learn(Capability.STREAM, False, f"a stream's re-attach was refused: {exc}")
            return None
        return opened.owner


def streamed(state: RunState, opened: Opened) -> RunState:
    """The state of a run a stream follows (its owner with it)."""
    if opened.owner is None:
        return state
    return RunState(**{**state.__dict__, "stream_owner": opened.owner})
