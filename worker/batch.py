"""The active batch of a conversation: the events one run answers, and how far it got."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from worker.events import InboundEvent

# Where a batch is in its life.
CREATING = "creating"  # no run known yet: create one (or adopt the one a lost response made)
RUNNING = "running"  # a run is known: poll it
CANCELLING = "cancelling"  # answered already (cancel, timeout): wait for the API to stop the run


# Fields kept in memory only, never written to Redis.
TRANSIENT = frozenset({"events_json", "lease_released", "fresh"})


@dataclass
class Batch:
    batch_id: str
    conversation_id: str
    events_json: str  # the events, parsed only when needed (a poll does not need them)
    state: str = CREATING
    thread_id: str | None = None
    run_id: str | None = None
    run_attempt: int = 0  # runs started for this batch after retryable failures
    messages_appended: bool = False  # the user messages are on the thread
    api_failures: int = 0  # consecutive failed API steps
    busy_waits: int = 0  # looks at a conversation another (unlistable) response kept busy
    step_crashes: int = 0  # steps that raised something unexpected (a bug, a strange answer)
    polls: int = 0  # polls of the current phase
    phase_started_at: float | None = None  # run start, or the last tool submission
    created_at: float = 0.0
    run_started_at: float | None = None
    published: bool = False
    cancel_deadline: float | None = None
    tools_key: str | None = None  # the requires_action step whose tools were dispatched
    tools_at: float | None = None
    tools_redispatched: bool = False  # the tools of tools_key were dispatched before
    usage: dict[str, int] = field(default_factory=dict)
    create_sent: int = -1  # the run attempt whose create request went out (reconcile first)
    unconfirmed: bool = False  # the run may repeat an earlier one's input: confirm_run first
    fence: int = 0  # the fencing token of the lease that last wrote the batch
    lease_released: bool = False  # the step's last write already gave the lease back
    fresh: bool = False  # opened by the current step (nothing of it can have reached the API)

    @classmethod
    def new(cls, batch_id: str, conversation_id: str, events: list[InboundEvent], **kwargs: Any) -> Batch:
        events_json = json.dumps([e.model_dump(mode="json", exclude_defaults=True) for e in events],
                                 separators=(",", ":"))
        batch = cls(batch_id, conversation_id, events_json, **kwargs)
        batch.__dict__["_events"] = events
        return batch

    @property
    def events(self) -> list[InboundEvent]:
        cached = self.__dict__.get("_events")
        if cached is None:
            cached = [InboundEvent.model_validate(e) for e in json.loads(self.events_json)]
            self.__dict__["_events"] = cached
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

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = (usage or {}).get(key)
            if isinstance(value, int):
                self.usage[key] = self.usage.get(key, 0) + value

    def to_hash(self) -> dict[str, str]:
        """The fields Lua scripts read or write on their own (a small Redis hash)."""
        return {name: _encode(getattr(self, name)) for name in HASH_FIELDS}

    def data_json(self) -> str:
        """Everything else, as one compact JSON document (the events embedded as they are)."""
        # Only what differs from the defaults: Redis keeps one copy per in-flight run.
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in HASH_FIELDS and f.name not in TRANSIENT
                and getattr(self, f.name) != _default(f)}
        rest = json.dumps(data, separators=(",", ":"))
        return '{"events":' + self.events_json + "," + rest[1:]

    @classmethod
    def from_redis(cls, fields: dict[bytes, bytes] | dict[str, str], data: bytes | str | None) -> Batch:
        document = json.loads(data or "{}")
        events = document.pop("events", [])
        kwargs: dict[str, Any] = {"events_json": json.dumps(events, separators=(",", ":"))}
        kwargs.update(document)
        decoded = {_s(k): _s(v) for k, v in fields.items()}
        for name, kind in HASH_FIELDS.items():
            if name in decoded:
                kwargs[name] = _decode(decoded[name], kind)
        return cls(**kwargs)


# Fields kept as hash fields of their own (read or written by Lua scripts, or by steps that
# run without the lease), with their types.
HASH_FIELDS: dict[str, type] = {
    "batch_id": str, "fence": int, "published": bool, "polls": int,
    "tools_key": str, "phase_started_at": float, "run_id": str, "unconfirmed": bool,
}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


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
