"""Inbound events and outbound entries: the wire formats of contract sections 1 and 2."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
MAX_CONTENT_CHARS = 256_000  # the Assistants API's limit for one message
MAX_METADATA_PAIRS = 16
MAX_ATTACHMENTS = 10

OutboundType = Literal[
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.expired",
    "run.incomplete",
    "event.rejected",
]


class InvalidEvent(ValueError):
    """An inbound event failed validation; `field` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Attachment(BaseModel):
    model_config = ConfigDict(extra="allow")
    file_id: str = Field(min_length=1, max_length=256)
    tools: list[dict[str, Any]] = Field(default_factory=list)


class InboundEvent(BaseModel):
    """One user message handed over by a producer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(min_length=1, max_length=256)
    conversation_id: str
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    assistant_id: str | None = Field(None, min_length=1, max_length=256)
    instructions: str | None = Field(None, max_length=MAX_CONTENT_CHARS)
    metadata: dict[str, str] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    sent_at: float = Field(gt=0, lt=4_102_444_800, description="epoch seconds of the accept step")

    @field_validator("conversation_id")
    @classmethod
    def _conversation_id(cls, value: str) -> str:
        if not CONVERSATION_ID.match(value):
            raise ValueError("must be 1-128 characters of [A-Za-z0-9._:@-]")
        return value

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank (it is only whitespace)")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"at most {MAX_METADATA_PAIRS} pairs")
        for key, item in value.items():
            if len(key) > 64 or len(item) > 512:
                raise ValueError("keys at most 64 and values at most 512 characters")
        return value

    def batch_key(self) -> tuple[str | None, str | None]:
        """Consecutive events with equal keys are answered by one run."""
        return (self.assistant_id, self.instructions)

    @classmethod
    def parse(cls, raw: str | bytes) -> InboundEvent:
        """Parse and validate a raw event, raising InvalidEvent with the first problem."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidEvent("event", f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidEvent("event", "not a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_from(exc) from None


def invalid_from(exc: ValidationError) -> InvalidEvent:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "event"
    return InvalidEvent(field, first["msg"].removeprefix("Value error, "))  # pydantic prefixes our validators' reasons


def salvage_ids(raw: str | bytes) -> tuple[str | None, list[str]]:
    """Best-effort conversation id and event id of an invalid event, for its rejection."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, []
    if not isinstance(data, dict):
        return None, []
    cid = data.get("conversation_id")
    eid = data.get("event_id")
    cid = cid if isinstance(cid, str) and CONVERSATION_ID.match(cid) else None
    ids = [eid] if isinstance(eid, str) and 0 < len(eid) <= 256 else []
    return cid, ids


class OutboundMessage(BaseModel):
    id: str
    role: str
    text: str
    annotations: list[dict[str, Any]]
    created_at: int | float | None


class OutboundError(BaseModel):
    code: str
    message: str


class Timings(BaseModel):
    queued_ms: int | None
    run_ms: int | None
    total_ms: int


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class OutboundEntry(BaseModel):
    """One entry of the outbound stream (field `data`)."""

    type: OutboundType
    conversation_id: str | None
    event_ids: list[str]
    thread_id: str | None = None
    run_id: str | None = None
    messages: list[OutboundMessage] = Field(default_factory=list)
    steps: list[dict[str, Any]] | None = None
    error: OutboundError | None = None
    usage: dict[str, int] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    timings: Timings
    published_at: str = Field(default_factory=utc_now_iso)

    def to_json(self) -> str:
        return self.model_dump_json()
