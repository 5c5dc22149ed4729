"""What a stream's reader stores with the batch for the next step (`stream_run`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import redis

from worker import keys
from worker.backends.base import RunState, StreamTarget, ToolCall

__all__ = ["Stored", "StreamTarget", "decode", "encode_broken", "encode_run", "stored"]


@dataclass(frozen=True)
class Stored:
    """The reader's last word: the run in a state the worker acts on, or why the stream
    broke (`run` None: poll it, or re-attach where the API can)."""

    run: RunState | None
    broken: str | None = None
    resumable: bool = True  # False: the server ended the stream itself (re-attaching gives nothing new)


def encode_run(run: RunState) -> str:
    """The run's state; its messages beside it, not in it: a worker of the release before,
    during a rolling deploy, reads `run` alone."""
    fields = dataclasses.asdict(run)
    messages = fields.pop("messages")
    document = {"run": fields} if messages is None else {"run": fields, "messages": messages}
    return json.dumps(document, separators=(",", ":"))


def encode_broken(reason: str, resumable: bool = True) -> str:
    return json.dumps({"broken": reason[:500], "resumable": resumable}, separators=(",", ":"))


def decode(text: str) -> Stored:
    document: dict[str, Any] = json.loads(text)
    run = document.get("run")
    if not isinstance(run, dict):
        return Stored(None, str(document.get("broken") or "broken"), bool(document.get("resumable", True)))
    calls = [ToolCall(**c) for c in run.pop("tool_calls", [])]
    messages = document.get("messages")
    return Stored(RunState(tool_calls=calls, messages=messages if isinstance(messages, list) else None, **run))


def stored(stream_owner: str | None, stream_ended: str | None, stream_run: str | None) -> Stored | None:
    """What the batch's current stream stored, if anything (a state its earlier streams
    stored is not theirs: their owner is not the batch's owner any more)."""
    if not stream_owner or not stream_ended or not stream_run:
        return None
    owner, _, _ = stream_ended.rpartition(" ")
    return decode(stream_run) if owner == stream_owner else None


def owner_alive(client: redis.Redis, owner: str) -> bool:
    """Whether the process that owns a stream ("process/generation") still beats."""
    return bool(client.exists(keys.streamer(owner.rpartition("/")[0])))
