"""The active batch of each conversation, and what lasts beyond it (thread, last run).

Every write of a batch is fenced: by its batch id (it is still the active batch) and, for a
step holding the lease, by the lease's token (no newer lease holder wrote it since). A write
that is refused says so in its result; nothing is written on the caller's objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from worker import keys
from worker.batch import NOT_SAVED, Batch
from worker.redis_client import text
from worker.store.scripts import Arg, LuaScript


@dataclass(frozen=True)
class Write:
    written: bool  # False: another batch is active, or a newer lease wrote this one
    lease_released: bool  # the write gave the step's lease back


def _pairs(fields: dict[str, str]) -> list[Arg]:
    return [x for item in fields.items() for x in item]


class Batches:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._open = LuaScript(client, "open_batch")
        self._save = LuaScript(client, "save_batch")
        self._set_fields = LuaScript(client, "set_fields")
        self._record_poll = LuaScript(client, "record_poll")
        self._forget_thread = LuaScript(client, "forget_thread")

    def load(self, conversation_id: str) -> Batch | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.batch(conversation_id))
        pipe.get(keys.batch_data(conversation_id))
        fields, data = pipe.execute()
        return Batch.from_redis(fields, data) if fields else None

    def open(self, batch: Batch, *, taken: int, token: int) -> bool:
        """Write a new batch and take its `taken` events off the inbox head; False when a
        batch is open already or the lease is no longer `token`'s."""
        cid = batch.conversation_id
        return bool(self._open(
            keys={"inbox": keys.inbox(cid), "batch": keys.batch(cid), "batch_data": keys.batch_data(cid),
                  "lock": keys.lock(cid)},
            args={"taken": taken, "token": token, "data": batch.data_json(), "fields": _pairs(batch.to_hash())}))

    def save(self, batch: Batch, *, token: int, due: float | None = None, release: bool = False) -> Write:
        """Write the batch's progress, and with it its next due time, the batch's thread as
        the conversation's, and (`release`) the lease's release. `published` is left alone
        (only publishing sets it), and so is what a run's stream reader writes."""
        cid = batch.conversation_id
        fields = {k: v for k, v in batch.to_hash().items() if k not in NOT_SAVED}
        written = bool(self._save(
            keys={"batch": keys.batch(cid), "schedule": keys.SCHEDULE, "lock": keys.lock(cid),
                  "conversation": keys.conversation(cid), "batch_data": keys.batch_data(cid)},
            args={"batch_id": batch.batch_id, "token": token, "due": due, "release": int(release),
                  "conversation_id": cid, "thread_id": batch.thread_id, "data": batch.data_json(),
                  "fields": _pairs(fields)}))
        return Write(written, lease_released=release)

    def record_poll(self, batch: Batch, *, token: int, due: float) -> Write:
        """Count a poll, schedule the next and give the lease back, in one round trip."""
        cid = batch.conversation_id
        written = bool(self._record_poll(
            keys={"batch": keys.batch(cid), "schedule": keys.SCHEDULE, "lock": keys.lock(cid)},
            args={"batch_id": batch.batch_id, "conversation_id": cid, "due": due, "token": token}))
        return Write(written, lease_released=True)

    def set_fields(self, batch: Batch, fields: dict[str, str], due: float | None = None) -> bool:
        """Write some hash fields of the active batch, fenced by batch id only (for the tool
        round, which runs without the lease), and optionally its next due time."""
        cid = batch.conversation_id
        return bool(self._set_fields(
            keys={"batch": keys.batch(cid), "schedule": keys.SCHEDULE},
            args={"batch_id": batch.batch_id, "conversation_id": cid, "due": due, "fields": _pairs(fields)}))

    # --- what lasts beyond a batch -----------------------------------------------------
    def peek_inbox(self, conversation_id: str, count: int) -> list[bytes]:
        raws = self.redis.lrange(keys.inbox(conversation_id), 0, count - 1)
        return [raw.encode() if isinstance(raw, str) else raw for raw in raws]

    def thread_id(self, conversation_id: str) -> str | None:
        value = self.redis.hget(keys.conversation(conversation_id), "thread_id")
        return text(value) if value else None

    def forget_thread(self, conversation_id: str, thread_id: str) -> bool:
        """The server lost `thread_id`: the conversation's next run starts a new thread (its
        last run goes with it). False when the conversation holds another thread by now."""
        return bool(self._forget_thread(keys={"conversation": keys.conversation(conversation_id)},
                                        args={"thread_id": thread_id}))

    def last_run_id(self, conversation_id: str) -> str | None:
        """The run of the conversation's last published batch (Responses reconciliation)."""
        value = self.redis.hget(keys.conversation(conversation_id), "last_run_id")
        return text(value) if value else None
