"""What each API's stream events mean to the worker: text to publish, the run's object, an
ending, a cursor. One translator per stream, since a message's parts are counted across
its events (a new part of a message starts with "\n", as the outbound entry joins parts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from worker.backends.base import RunState
from worker.streams.sse import Event

# The run's (response's) state from its object, and from the run's finished messages when
# its stream carried all of them (None: the step reads them).
Parse = Callable[[dict[str, Any], list[dict[str, Any]] | None], RunState]
MESSAGE_ENDINGS = frozenset({"thread.message.completed", "thread.message.incomplete"})

ASSISTANTS_ENDINGS = frozenset({"thread.run.requires_action", "thread.run.completed", "thread.run.failed",
                                "thread.run.cancelled", "thread.run.expired", "thread.run.incomplete"})
RESPONSES_ENDINGS = frozenset({"response.completed", "response.failed", "response.incomplete",
                               "response.cancelled"})
TEXT_DELTA = "response.output_text.delta"
# The Responses events whose data matters (the rest, parts and items, are skipped undecoded).
RESPONSES_READ = RESPONSES_ENDINGS | {"response.created", "response.queued", "response.in_progress",
                                      "response.output_text.delta", "error"}


class Text(NamedTuple):  # a tuple: one per delta
    message_id: str
    text: str


@dataclass(slots=True)
class Update:
    """What one event brought."""

    texts: list[Text] = field(default_factory=list)
    run: dict[str, Any] | None = None  # the run's (response's) object, when the event carries it
    ended: bool = False  # `run` is in a state the worker acts on: the stream has nothing more
    cursor: int | None = None  # Responses: the event's sequence_number
    done: bool = False  # the stream's own end marker
    error: str | None = None  # an error event: the stream is broken
    messages: list[dict[str, Any]] | None = None  # with an ending: the run's finished messages (see Parse)


# A text event's texts and its sequence number (None: the API numbers no events).
Texts = tuple[list[Text], int | None]


class Translator(Protocol):
    def texts(self, event: Event) -> Texts | None:
        """A text delta's texts: the fast path, most events of a stream are these; None for
        any other event (see `read`)."""

    def read(self, event: Event) -> Update | None:
        """What the event means to the worker; None: nothing (most events)."""


class _Parts:
    """The content parts seen per message: a delta of a new part after some text starts with "\\n"."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def text(self, message_id: str, index: int, value: str) -> Text:
        last = self._seen.get(message_id)
        if last == index:  # most deltas: the same part as the one before
            return Text(message_id, value)
        self._seen[message_id] = index if last is None else max(last, index)
        return Text(message_id, "\n" + value if last is not None and index > last else value)


class AssistantsEvents:
    """Assistants v2: `thread.run.*` events carry the run, `thread.message.delta` its text.
    The stream of a create (`whole_run`) sees every message of its run finish: the ending
    brings them, and the step need not list them."""

    def __init__(self, whole_run: bool = False) -> None:
        self._parts = _Parts()
        self._messages: dict[str, dict[str, Any]] | None = {} if whole_run else None

    @classmethod
    def of_create(cls) -> AssistantsEvents:
        return cls(whole_run=True)

    def texts(self, event: Event) -> Texts | None:
        if event.name != "thread.message.delta":
            return None
        data = event.data
        return (self._texts(data) if isinstance(data, dict) else []), None

    def read(self, event: Event) -> Update | None:
        name = event.name
        if name == "thread.message.delta":
            texts, _ = self.texts(event) or ([], None)
            return Update(texts=texts) if texts else None
        if name.startswith("thread.run.") and not name.startswith("thread.run.step."):
            data = event.data
            if not isinstance(data, dict):
                return None
            ended = name in ASSISTANTS_ENDINGS
            messages = list(self._messages.values()) if ended and self._messages is not None else None
            return Update(run=data, ended=ended, messages=messages)
        if name in MESSAGE_ENDINGS and self._messages is not None:
            data = event.data
            if isinstance(data, dict) and data.get("id"):
                self._messages[str(data["id"])] = data
            return None
        if name == "done":
            return Update(done=True)
        if name == "error":
            return Update(error=_error_text(event.data))
        return None

    def _texts(self, data: dict[str, Any]) -> list[Text]:
        try:  # the usual shape, read directly; any other is read with care below
            message_id, texts = data["id"], []
            for part in data["delta"]["content"]:
                if part["type"] != "text":
                    continue
                index, value = part["index"], part["text"]["value"]
                if type(message_id) is not str or type(index) is not int or type(value) is not str:
                    return self._texts_with_care(data)
                if value:
                    texts.append(self._parts.text(message_id, index, value))
            return texts
        except (KeyError, TypeError):
            return self._texts_with_care(data)

    def _texts_with_care(self, data: dict[str, Any]) -> list[Text]:
        content = (data.get("delta") or {}).get("content")
        if not content:
            return []
        message_id = str(data.get("id") or "")
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                value = (part.get("text") or {}).get("value")
                if value:
                    texts.append(self._parts.text(message_id, int(part.get("index") or 0), str(value)))
        return texts


class ResponsesEvents:
    """Responses: every event names itself in `type` and counts in `sequence_number`."""

    def __init__(self) -> None:
        self._parts = _Parts()

    def texts(self, event: Event) -> Texts | None:
        if event.name != TEXT_DELTA:
            return None  # unnamed events too: `read` finds their type in their data
        data = event.data
        if not isinstance(data, dict) or data.get("type") != TEXT_DELTA:
            return None
        seq = data.get("sequence_number")
        return self._text(data), seq if isinstance(seq, int) else None

    def _text(self, data: dict[str, Any]) -> list[Text]:
        value = str(data.get("delta") or "")
        if not value:
            return []
        return [self._parts.text(str(data.get("item_id") or ""), int(data.get("content_index") or 0), value)]

    def read(self, event: Event) -> Update | None:
        if event.name and event.name not in RESPONSES_READ:
            return None  # its sequence number is not needed: a re-attach replays it, harmless
        data = event.data
        if not isinstance(data, dict):
            return Update(done=data == "[DONE]")
        kind = str(data.get("type") or event.name)
        seq = data.get("sequence_number")
        update = Update(cursor=seq if isinstance(seq, int) else None)
        if kind == "error":
            update.error = _error_text(data)
        elif kind == TEXT_DELTA:
            update.texts = self._text(data)
        elif kind.startswith("response.") and isinstance(data.get("response"), dict):
            update.run, update.ended = data["response"], kind in RESPONSES_ENDINGS
        return update


def _error_text(data: Any) -> str:
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("code") or inner)
    return str(data)[:200]
