"""Whether a running response locks its conversation, learnt once for the fleet.

OpenAI locks a conversation while a response runs (`conversation_locked`); some compatible
servers do not, and add a response's items only when it completes, so that a create whose
answer was lost shows nowhere while it runs. Which it is decides what the worker does after
an unknown outcome (responses.py). It is learnt from any `conversation_locked` answer and,
the first time it matters (an earlier create not found), by a probe: on a conversation of
its own the worker creates a response and, at once, a second one. `conversation_locked`
means yes; a second one accepted means no. Both are cancelled at once: a few tokens, once
per CAPABILITY_TTL_SECONDS for the fleet. The `conversation_lock` setting forces the answer
(and nothing is probed).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import structlog

from worker.backends.base import RunState
from worker.capabilities import Capability, CapabilityStore
from worker.errors import PermanentApiError, ThreadBusyError, TransientApiError

log = structlog.get_logger(__name__)

PROBE_TEXT = "ping"
PROBE_INSTRUCTIONS = "Answer with one word."
Create = Callable[[str, list[dict[str, Any]], str | None, dict[str, str]], RunState]


class LockProbe:
    def __init__(self, known: CapabilityStore, new_conversation: Callable[[], str], create: Create,
                 cancel: Callable[[str], Any]) -> None:
        self.known = known
        self.new_conversation = new_conversation
        self.create = create
        self.cancel = cancel
        self._probing = threading.Lock()

    def locks(self, *, probe: bool) -> bool:
        """Whether the server locks: set, learnt, or (`probe`) probed now; else assumed not."""
        learnt = self.known.get(Capability.CONVERSATION_LOCK)
        if learnt.mode != "auto":
            return learnt.mode == "on"
        if learnt.value is not None or not probe:
            return bool(learnt.value)
        with self._probing:  # one probe per process, however many threads meet the unknown
            again = self.known.get(Capability.CONVERSATION_LOCK)
            return again.value if again.value is not None else self._probe()

    def _probe(self) -> bool:
        conversation = self.new_conversation()
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROBE_TEXT}]}
        metadata = {"probe": Capability.CONVERSATION_LOCK.value}
        first = self.create(conversation, [item], PROBE_INSTRUCTIONS, metadata)
        made = [first.id]
        try:
            made.append(self.create(conversation, [item], PROBE_INSTRUCTIONS, metadata).id)
        except ThreadBusyError:
            locks, reason = True, "a second response on a probe conversation answered conversation_locked"
        else:
            locks, reason = False, f"a second response on a probe conversation was accepted ({first.status} first)"
        finally:
            for response_id in made:
                with contextlib.suppress(TransientApiError, PermanentApiError):  # best effort: a few tokens
                    self.cancel(response_id)
        self.known.learn(Capability.CONVERSATION_LOCK, locks, reason)
        return locks
