"""The schedule of due conversations, and the lease a step holds on one conversation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis

from worker import keys
from worker.batch import Batch
from worker.store.scripts import LuaScript


@dataclass(frozen=True)
class Begun:
    """A step that holds the conversation's lease (`token`), and what it starts from."""

    token: int
    raw_batch: tuple[dict[bytes, bytes], bytes | None] | None  # the batch's hash and document
    cancel_at: float | None  # a pending cancel request, taken by this step
    inbox_head: list[bytes]  # when no batch is open
    thread_id: str | None  # the conversation's thread, when no batch is open

    def batch(self) -> Batch | None:
        """The open batch (decoded here, so that one that cannot be read fails the step)."""
        return Batch.from_redis(*self.raw_batch) if self.raw_batch is not None else None


@dataclass(frozen=True)
class NotBegun:
    """The claim was stale (another message overtook it), or another worker holds the lease
    (the claim then comes due again soon)."""

    stale: bool


class Schedule:
    def __init__(self, client: redis.Redis, clock: Callable[[], float]) -> None:
        self.redis = client
        self.clock = clock
        self._claim = LuaScript(client, "claim")
        self._begin = LuaScript(client, "begin_step")
        self._end = LuaScript(client, "end_step")
        self._retire = LuaScript(client, "retire")

    def claim_due(self, now: float, limit: int, claim_until: float) -> tuple[list[str], float | None]:
        """Claim what is due (moved to `claim_until`); returns it and the next due time."""
        members, next_due = self._claim(keys={"schedule": keys.SCHEDULE},
                                        args={"now": now, "limit": limit, "claim_until": claim_until})
        return [m.decode() for m in members], float(next_due) if next_due else None

    def wait_for_wake(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds, or until a producer says something is due now."""
        self.redis.blpop([keys.WAKE], timeout=max(0.001, timeout))

    def put(self, conversation_id: str, due: float) -> None:
        self.redis.zadd(keys.SCHEDULE, {conversation_id: due})

    def retire_if_idle(self, conversation_id: str) -> bool:
        """Take an idle conversation off the schedule; False when an event arrived meanwhile."""
        return bool(self._retire(
            keys={"batch": keys.batch(conversation_id), "inbox": keys.inbox(conversation_id),
                  "schedule": keys.SCHEDULE},
            args={"conversation_id": conversation_id}))

    def begin_step(self, conversation_id: str, *, lease_seconds: float, claimed: float | None,
                   inbox_head: int) -> Begun | NotBegun:
        """Check the claim (`claimed`: its schedule score; None when not called from a claim),
        take the lease, and read what the step starts from, in one round trip."""
        cid = conversation_id
        reply = self._begin(
            keys={"schedule": keys.SCHEDULE, "lock": keys.lock(cid), "conversation": keys.conversation(cid),
                  "batch": keys.batch(cid), "cancel_request": keys.cancel_request(cid),
                  "inbox": keys.inbox(cid), "batch_data": keys.batch_data(cid)},
            args={"conversation_id": cid, "claimed": "" if claimed is None else claimed,
                  "lease_ms": int(lease_seconds * 1000), "retry_due": self.clock() + 1.0,
                  "inbox_head": inbox_head})
        token = int(reply[0])
        if token <= 0:
            return NotBegun(stale=token < 0)
        flat, cancel = reply[1], float(reply[2]) if reply[2] else None
        if not flat:
            return Begun(token, None, cancel, list(reply[3]), reply[4].decode() if reply[4] else None)
        return Begun(token, (dict(zip(flat[::2], flat[1::2], strict=True)), reply[3]), cancel, [], None)

    def end_step(self, conversation_id: str, token: int) -> bool:
        """Give the lease back (False: it was no longer ours)."""
        return bool(self._end(keys={"lock": keys.lock(conversation_id)}, args={"token": token}))
