"""Answers: the outbound stream (once per batch), rejections and dead letters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from worker import keys
from worker.batch import Batch
from worker.store.deltas import Delta, DeltaConfig, DeltaStreams
from worker.store.scripts import Arg, LuaScript


@dataclass(frozen=True)
class Published:
    accepted: bool  # False: another batch is active, or a newer lease wrote this one
    published: bool  # the entry went out now (not before)
    events_wait: bool  # released, and the inbox holds events: the lease is still held
    lease_released: bool


def _pairs(fields: dict[str, str]) -> list[Arg]:
    return [x for item in fields.items() for x in item]


class Outbound:
    def __init__(self, client: redis.Redis, *, stream: str, maxlen: int, dead_letter_maxlen: int,
                 clock: Callable[[], float], deltas: DeltaStreams | None = None) -> None:
        self.redis = client
        self.deltas = deltas or DeltaStreams(client, DeltaConfig())
        self.stream = stream
        self.maxlen = maxlen
        self.dead_letter_maxlen = dead_letter_maxlen
        self.clock = clock
        self._publish = LuaScript(client, "publish")
        self._reject_head = LuaScript(client, "reject_head")
        self._reject_in_batch = LuaScript(client, "reject_in_batch")

    def publish(self, batch: Batch, entry_json: str, *, token: int, release: bool,
                deltas: Sequence[Delta] = ()) -> Published:
        """Publish the batch's entry once (an empty entry publishes nothing), and with it
        `deltas` (its delta stream's last). `release`: the batch ends; else it stays,
        written as `batch` (stopping its run)."""
        cid, streams = batch.conversation_id, self.deltas
        result = int(self._publish(
            keys={"batch": keys.batch(cid), "outbound": self.stream, "schedule": keys.SCHEDULE,
                  "inbox": keys.inbox(cid), "batch_data": keys.batch_data(cid), "lock": keys.lock(cid),
                  "conversation": keys.conversation(cid), "delta_stream": streams.key(cid),
                  "delta_lengths": keys.delta_lengths(cid)},
            args={"batch_id": batch.batch_id, "entry": entry_json, "maxlen": self.maxlen,
                  "release": int(release), "conversation_id": cid, "next_due": self.clock(),
                  "token": token, "run_id": batch.run_id, "data": "" if release else batch.data_json(),
                  "deltas": streams.encode(deltas) if entry_json else "", "delta_maxlen": streams.config.maxlen,
                  "delta_ttl": streams.config.ttl_seconds,
                  "fields": [] if release else _pairs({k: v for k, v in batch.to_hash().items() if k != "published"})}))
        if result < 0:
            return Published(False, False, False, False)
        events_wait = result >= 10
        return Published(True, result % 10 == 1, events_wait, release and not events_wait)

    def reject_head(self, conversation_id: str, raw: bytes, entry_json: str, reason: str) -> bool:
        """Take an invalid event off the inbox head, publish its rejection, dead-letter it."""
        return bool(self._reject_head(
            keys={"inbox": keys.inbox(conversation_id), "outbound": self.stream, "dead_letters": keys.DEAD_LETTERS},
            args={"raw": raw, "entry": entry_json, "maxlen": self.maxlen, "reason": reason,
                  "dead_letter_maxlen": self.dead_letter_maxlen}))

    def reject_in_batch(self, batch: Batch, *, token: int, entry_json: str, raw: str, reason: str) -> bool:
        """Publish one refused event's rejection, dead-letter it and write `batch` (without it),
        fenced; False when another batch is active or a newer lease wrote this one."""
        cid = batch.conversation_id
        return bool(self._reject_in_batch(
            keys={"batch": keys.batch(cid), "batch_data": keys.batch_data(cid), "outbound": self.stream,
                  "dead_letters": keys.DEAD_LETTERS},
            args={"batch_id": batch.batch_id, "token": token, "data": batch.data_json(), "entry": entry_json,
                  "maxlen": self.maxlen, "raw": raw, "reason": reason, "dead_letter_maxlen": self.dead_letter_maxlen}))

    def dead_letter(self, raws: list[str], reason: str) -> None:
        pipe = self.redis.pipeline()
        for raw in raws:
            pipe.xadd(keys.DEAD_LETTERS, {"raw": raw, "reason": reason},
                      maxlen=self.dead_letter_maxlen, approximate=True)
        pipe.execute()

    def publish_rejection(self, entry_json: str, raw: str, reason: str) -> None:
        """Reject something that never reached an inbox (a malformed worker message)."""
        pipe = self.redis.pipeline()
        pipe.xadd(self.stream, {"data": entry_json}, maxlen=self.maxlen, approximate=True)
        pipe.xadd(keys.DEAD_LETTERS, {"raw": raw, "reason": reason},
                  maxlen=self.dead_letter_maxlen, approximate=True)
        pipe.execute()
