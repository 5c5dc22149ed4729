"""The per-conversation delta streams (docs/contract.md, "Deltas"): what a batch's run is
doing, for a chat app that shows it as it goes. The outbound stream stays the one source of
truth; a delta is a view of the way there.

A delta is written by a Lua script (lua/deltas.lua) that gives it its `seq` from a counter
kept with the batch, fenced as the step's other writes are; a batch's last deltas (its
messages' catch-up text and `run.ended`) go with its outbound entry (publish.lua).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from worker import keys
from worker.batch import Batch
from worker.redis_client import stream_entries
from worker.settings import Settings
from worker.store.scripts import LuaScript

DeltaType = Literal["run.started", "message.delta", "tool.calls", "run.ended"]


@dataclass(frozen=True)
class Delta:
    """One delta entry before Redis gives it its `seq`. `run`: the batch's run (a RunRef,
    encoded), by which run.started is written once per run. message.delta: `text` is the
    message's whole text so far when `catch_up` (only what was not published yet is
    written), else the text to add."""

    type: DeltaType
    run: str
    fields: dict[str, Any] = field(default_factory=dict)  # the entry's fields, seq and text aside
    message_id: str | None = None
    text: str | None = None
    catch_up: bool = False
    at: int | None = None  # a stream event's sequence number (Responses): written once per event
    entry_json: str | None = None  # the entry's JSON, made once for many deltas (else from `fields`)

    def item(self) -> dict[str, Any]:
        entry = self.entry_json or json.dumps({"type": self.type, **self.fields}, separators=(",", ":"))
        item: dict[str, Any] = {"type": self.type, "run": self.run, "entry": entry}
        if self.type == "message.delta":
            item.update(message_id=self.message_id, text=self.text or "", catch_up=self.catch_up)
        if self.at is not None:
            item["at"] = self.at
        return item


@dataclass(frozen=True)
class DeltaConfig:
    """DELTAS and the streams' key prefix, cap and expiry."""

    enabled: bool = True
    prefix: str = "assistant:deltas:"
    maxlen: int = 1000
    ttl_seconds: int = 3600

    @classmethod
    def from_settings(cls, settings: Settings) -> DeltaConfig:
        return cls(settings.deltas == "on", settings.delta_stream_prefix, settings.delta_stream_maxlen,
                   settings.delta_stream_ttl_seconds)


class DeltaStreams:
    def __init__(self, client: redis.Redis, config: DeltaConfig) -> None:
        self.redis = client
        self.config = config
        self._write = LuaScript(client, "write_deltas")

    def key(self, conversation_id: str) -> str:
        return self.config.prefix + conversation_id

    def encode(self, deltas: Sequence[Delta]) -> str:
        """The script argument (empty: nothing to write, or DELTAS=off)."""
        if not self.config.enabled or not deltas:
            return ""
        # Not ASCII-escaped: the script counts a message's published text in UTF-8 bytes.
        return json.dumps([d.item() for d in deltas], separators=(",", ":"), ensure_ascii=False)

    def write(self, batch: Batch, deltas: Sequence[Delta], *, token: int) -> int | None:
        """Write `deltas` of the active `batch` in order; how many were (a run.started of
        the run already started, or a delta before any run.started, is not), or None when
        the write was refused (another batch is active, or a newer lease wrote this one)."""
        encoded = self.encode(deltas)
        if not encoded:
            return 0
        cid = batch.conversation_id
        written = int(self._write(
            keys={"batch": keys.batch(cid), "deltas": self.key(cid), "lengths": keys.delta_lengths(cid)},
            args={"batch_id": batch.batch_id, "token": token, "maxlen": self.config.maxlen,
                  "ttl": self.config.ttl_seconds, "deltas": encoded}))
        return None if written < 0 else written

    def read(self, conversation_id: str) -> list[dict[str, Any]]:
        """The stream's entries, oldest first (decoded `data`)."""
        rows = stream_entries(self.redis.xrange(self.key(conversation_id)))
        return [json.loads(fields[b"data"]) for _, fields in rows]
