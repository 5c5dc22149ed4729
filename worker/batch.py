"""The active batch of a conversation: the events one run answers, its phase, how far it got.

A batch is a value: a step reads it, and each transition makes a new one (`evolve`). In
Redis it is a small hash (the fields Lua scripts or lease-free writers touch) beside one
compact JSON document (the rest, events embedded). The layout is the previous release's,
read and written the same way, so that both releases can work side by side in a rolling
deploy: the phase is its `state` field, and a new field goes in the hash, whose unknown
fields the previous release ignores (it refuses unknown keys in the document).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from worker.events import InboundEvent


class Phase(enum.StrEnum):
    """Where a batch is in its life (the value is what Redis holds)."""

    STARTING = "creating"  # no run known yet: create one, or adopt the one a lost answer made
    RUNNING = "running"  # a run is known: follow it (through tool rounds) until it ends
    STOPPING = "cancelling"  # answered already: wait for the API to stop the run, then release


@dataclass(frozen=True)
class Batch:
    batch_id: str
    conversation_id: str
    events_json: str  # the events, parsed only when needed (a poll does not need them)
    phase: Phase = Phase.STARTING
    thread_id: str | None = None
    run_id: str | None = None  # a RunRef, encoded (worker.backends.base)
    run_attempt: int = 0  # runs started for this batch after retryable failures
    messages_appended: bool = False  # the user messages are on the thread
    api_failures: int = 0  # consecutive failed API steps
    busy_waits: int = 0  # looks at a conversation another (unlistable) response kept busy
    step_crashes: int = 0  # steps that raised something unexpected (a bug, a strange answer)
    polls: int = 0  # polls since phase_started_at
    phase_started_at: float | None = None  # the run's start, or the last tool submission
    created_at: float = 0.0
    run_started_at: float | None = None
    published: bool = False  # answered: the outbound entry is out
    cancel_deadline: float | None = None  # STOPPING: release by then, stopped or not
    tools_key: str | None = None  # the requires_action step whose tools were dispatched
    tools_at: float | None = None
    tools_redispatched: bool = False  # the tools of tools_key were dispatched before
    usage: dict[str, int] = field(default_factory=dict)
    create_sent: int = -1  # the run attempt whose create request went out (reconcile first)
    unconfirmed: bool = False  # the run may repeat an earlier one's input: confirm it first
    stop_requested: bool = False  # STOPPING: the API was asked to stop the run
    appended_events: int = 0  # the first events known on the thread, appended one at a time
    threads_lost: int = 0  # threads the server lost under this batch (each starts a new one)
    held_at: float | None = None  # the API circuit holds the batch since (worker/circuit.py)
    held_seconds: float = 0.0  # held before, since the run's first start (or since creation)
    # When the latest create of this attempt that may have gone through unseen was sent
    # (None: none may have): a server that would not show it running is given time to.
    create_sent_at: float | None = None
    created_again: bool = False  # a create was repeated while an earlier one may run unseen
    # The same for the tool round's submission: when the latest that may have gone through
    # unseen was sent (written by the tools actor too: a hash field).
    submit_sent_at: float | None = None
    # The run's event stream (worker/streams/): its owner ("process generation": the reader
    # whose writes are accepted; written by steps and the tools actor), and what only the
    # reader writes: the state it stored for the next step (JSON), that state's owner and
    # time ("owner time"), and its cursor ("response_id sequence_number", Responses).
    stream_owner: str | None = None
    stream_breaks: int = 0  # streams of this batch that broke off (re-attached at most MAX_RESUMES times)
    stream_run: str | None = None
    stream_ended: str | None = None
    stream_cursor: str | None = None

    @classmethod
    def new(cls, batch_id: str, conversation_id: str, events: list[InboundEvent], **kwargs: Any) -> Batch:
        events_json = json.dumps([e.model_dump(mode="json", exclude_defaults=True) for e in events],
                                 separators=(",", ":"))
        batch = cls(batch_id, conversation_id, events_json, **kwargs)
        object.__setattr__(batch, "_events", events)
        return batch

    def evolve(self, **changes: Any) -> Batch:
        """A copy with `changes` (the parsed events carried over)."""
        batch = dataclasses.replace(self, **changes)
        if "_events" in self.__dict__:
            object.__setattr__(batch, "_events", self.__dict__["_events"])
        return batch

    def held_for(self, now: float) -> float:
        """Seconds the circuit held the batch since its run's first start (before it: since
        it was created): they do not count toward RUN_TIMEOUT_SECONDS."""
        return self.held_seconds + (now - self.held_at if self.held_at is not None else 0.0)

    @property
    def events(self) -> list[InboundEvent]:
        cached: list[InboundEvent] | None = self.__dict__.get("_events")
        if cached is None:
            cached = [InboundEvent.model_validate(e) for e in json.loads(self.events_json)]
            object.__setattr__(self, "_events", cached)
        return cached

    @property
    def event_ids(self) -> list[str]:
        return [e.event_id for e in self.events]

    @property
    def first(self) -> InboundEvent:
        return self.events[0]

    @property
    def oldest_sent_at(self) -> float:
        return min(e.sent_at for e in self.events)

    def without_event(self, index: int) -> Batch:
        """The batch without its `index`-th event (one the API refused)."""
        events = [e for n, e in enumerate(self.events) if n != index]
        events_json = json.dumps([e.model_dump(mode="json", exclude_defaults=True) for e in events],
                                 separators=(",", ":"))
        batch = dataclasses.replace(self, events_json=events_json)
        object.__setattr__(batch, "_events", events)
        return batch

    def with_usage(self, usage: dict[str, Any] | None) -> Batch:
        total = dict(self.usage)
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = (usage or {}).get(key)
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
        return self.evolve(usage=total) if total != self.usage else self

    # --- the Redis layout --------------------------------------------------------------
    def to_hash(self) -> dict[str, str]:
        """The fields Lua scripts read or write on their own (a small Redis hash)."""
        return {name: _encode(getattr(self, name)) for name in HASH_FIELDS}

    def data_json(self) -> str:
        """Everything else, as one compact JSON document (the events embedded as they are)."""
        # Only what differs from the defaults: Redis keeps one copy per in-flight run.
        data = {_DOCUMENT_NAMES.get(f.name, f.name): _plain(getattr(self, f.name))
                for f in dataclasses.fields(self)
                if f.name not in HASH_FIELDS and f.name != "events_json" and getattr(self, f.name) != _default(f)}
        rest = json.dumps(data, separators=(",", ":"))
        return '{"events":' + self.events_json + "," + rest[1:]

    @classmethod
    def from_redis(cls, fields: dict[bytes, bytes] | dict[str, str], data: bytes | str | None) -> Batch:
        document = json.loads(data or "{}")
        events = document.pop("events", [])
        kwargs: dict[str, Any] = {"events_json": json.dumps(events, separators=(",", ":"))}
        for key, value in document.items():
            name = _ATTRIBUTE_NAMES.get(key, key)
            if name in _DOCUMENT_FIELDS:  # a newer release's extra keys are skipped
                kwargs[name] = value
        for key, value in fields.items():
            name = _s(key)
            kind = HASH_FIELDS.get(name)
            if kind is not None:
                kwargs[name] = _decode(_s(value), kind)
        if "phase" in kwargs:
            kwargs["phase"] = Phase(kwargs["phase"])
        return cls(**kwargs)


# Fields kept as hash fields of their own (read or written by Lua scripts, or by steps that
# run without the lease), with their types. (The scripts also keep `fence`, the token of
# the lease that wrote the batch last, and the delta stream's `delta_seq` and `delta_run`:
# lua/deltas.lua.)
HASH_FIELDS: dict[str, type] = {
    "batch_id": str, "published": bool, "polls": int,
    "tools_key": str, "phase_started_at": float, "run_id": str, "unconfirmed": bool,
    "stop_requested": bool, "appended_events": int, "threads_lost": int,  # newer than the previous release
    "held_at": float, "held_seconds": float,  # newer too
    "create_sent_at": float, "created_again": bool, "submit_sent_at": float,
    "stream_owner": str, "stream_breaks": int, "stream_run": str, "stream_ended": str, "stream_cursor": str,
}
# Hash fields a step never writes back: publishing sets `published`, a stream's reader the rest.
NOT_SAVED = frozenset({"published", "stream_run", "stream_ended", "stream_cursor"})
_DOCUMENT_NAMES = {"phase": "state"}  # attribute -> key in the JSON document
_ATTRIBUTE_NAMES = {v: k for k, v in _DOCUMENT_NAMES.items()}
_DOCUMENT_FIELDS = frozenset(f.name for f in dataclasses.fields(Batch)) - set(HASH_FIELDS) - {"events_json"}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _encode(value: Any) -> str:
    if value is None:
        return ""  # written, so that a cleared field is cleared in Redis too
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _decode(text: str, kind: type) -> Any:
    if kind is bool:
        return text == "1"
    if text == "":
        return 0 if kind is int else None
    return kind(text)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
