"""The conversation store: every read and write of conversation state in Redis.

Steps that must not interleave with a producer or a second worker are Lua scripts, so
each is one atomic Redis operation. A worker step on one conversation also holds the
conversation's lock (a lease with an expiry), and every write of a batch is fenced by its
batch id, so a step that lost its lease can never overwrite a newer batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from worker import keys
from worker.batch import Batch
from worker.events import InboundEvent

# A batch write is fenced twice: by batch id (the batch is still the active one) and by the
# lease's fencing token (no newer lease holder wrote it since). Token 0: no lease, no check.
_FENCE = """
local function fenced(batch_key, batch_id, token)
  if redis.call('HGET', batch_key, 'batch_id') ~= batch_id then return false end
  if tonumber(token) == 0 then return true end
  if tonumber(redis.call('HGET', batch_key, 'fence') or '0') > tonumber(token) then return false end
  redis.call('HSET', batch_key, 'fence', token)
  return true
end
"""

# KEYS: dedup, inbox, schedule, wake. ARGV: conversation id, event JSON, dedup ttl, now.
_ACCEPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3]) then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  if redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[4], '1')
    redis.call('LTRIM', KEYS[4], 0, 0)
  end
  return 1
end
return 0
"""

# KEYS: schedule. ARGV: now, limit, claim-until. Claimed members move to claim-until, so a
# claim whose worker died comes due again by itself. Returns the claimed members and the
# next due time (or nothing), so the scheduler can sleep until then.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[3], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {due, nxt[2] or false}
"""

# KEYS: batch, schedule, lock. ARGV: batch id, conversation id, due, token. Counts a
# poll, schedules the next one and gives the lease back: a poll step's only write.
_POLLED = _FENCE + """
if redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
if not fenced(KEYS[1], ARGV[1], ARGV[4]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'polls', 1)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""

# KEYS: schedule, lock, conversation, batch, cancel request, inbox, batch data. ARGV: conversation id,
# claimed score ('' when not called from a claim), lease ms, retry due, inbox head size.
# The start of every step, in one round trip: checks the claim is still the schedule's (a
# duplicated or overtaken message stops here: -1), takes the lease (busy: 0, and the claim
# comes due again soon), then returns the token, the batch, the pending cancel request and,
# when no batch is open, the head of the inbox and the thread id.
_BEGIN = """
if ARGV[2] ~= '' and tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) ~= tonumber(ARGV[2]) then
  return {-1}
end
if not redis.call('SET', KEYS[2], '0', 'NX', 'PX', ARGV[3]) then
  if ARGV[2] ~= '' then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]) end
  return {0}
end
local token = redis.call('HINCRBY', KEYS[3], 'fence', 1)
redis.call('SET', KEYS[2], token, 'PX', ARGV[3])
local cancel = redis.call('GET', KEYS[5])
if cancel then redis.call('DEL', KEYS[5]) end
local batch = redis.call('HGETALL', KEYS[4])
if #batch > 0 then return {token, batch, cancel, redis.call('GET', KEYS[7])} end
return {token, batch, cancel, redis.call('LRANGE', KEYS[6], 0, ARGV[5] - 1),
        redis.call('HGET', KEYS[3], 'thread_id')}
"""

# KEYS: lock. ARGV: token. Releases the lease only when it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: inbox, batch, batch data, lease. ARGV: count taken, lease token, batch data, then the
# batch hash as field/value pairs. Fails (0) when a batch is already open or the lease is no
# longer ours (the inbox head we read may have been taken meanwhile).
_OPEN_BATCH = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('GET', KEYS[4]) ~= ARGV[2] then return 0 end
redis.call('LTRIM', KEYS[1], ARGV[1], -1)
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('SET', KEYS[3], ARGV[3])
return 1
"""

# KEYS: batch, schedule, lock, conversation, batch data. ARGV: batch id, token, due ('' for
# none), release (0/1), conversation id, thread id ('' for none), batch data ('' to keep),
# then field/value pairs. Writes the batch's progress and, in the same round trip, its next
# due time, the conversation's thread id and the lease's release.
_UPDATE_BATCH = _FENCE + """
if ARGV[4] == '1' and redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
if not fenced(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
if ARGV[7] ~= '' then redis.call('SET', KEYS[5], ARGV[7]) end
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], 'thread_id', ARGV[6]) end
return 1
"""

# KEYS: batch, outbound, schedule, inbox, batch data, lease. ARGV: batch id, entry JSON, maxlen,
# release (0/1), conversation id, next due. An empty entry only releases. Publishes at most once per batch; on release
# the conversation is idle (off the schedule) unless events wait in its inbox.
# ARGV[7]: the lease's token; KEYS[6]: the lease, given back when the conversation goes idle.
# KEYS[7], ARGV[8]: the conversation and the batch's run id, kept as the conversation's last run
# (at publication, and again at release: a run confirmed after publication may have been replaced).
# Returns: -1 stale batch, 0 already published, 1 published; +10 when released and events wait.
_PUBLISH = _FENCE + """
if not fenced(KEYS[1], ARGV[1], ARGV[7]) then return -1 end
local result = 0
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'published') ~= '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'data', ARGV[2])
  redis.call('HSET', KEYS[1], 'published', '1')
  result = 1
end
if ARGV[8] ~= '' and (result == 1 or ARGV[4] == '1') then
  redis.call('HSET', KEYS[7], 'last_run_id', ARGV[8])  -- on release too: the run may have been replaced
end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1], KEYS[5])
  if redis.call('LLEN', KEYS[4]) == 0 then
    redis.call('ZREM', KEYS[3], ARGV[5])
    if redis.call('GET', KEYS[6]) == ARGV[7] then redis.call('DEL', KEYS[6]) end
  else
    redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
    result = result + 10
  end
end
return result
"""

# KEYS: inbox, outbound, dead letters. ARGV: raw event, entry JSON, maxlen, reason, dl maxlen.
# Removes an invalid event from the head of the inbox, publishes its rejection, dead-letters it.
_REJECT_HEAD = """
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'data', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'raw', ARGV[1], 'reason', ARGV[4])
return 1
"""

# KEYS: batch, inbox, schedule. ARGV: conversation id. Takes an idle, empty conversation
# off the schedule; returns 1 when there is nothing to do.
_RETIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('LLEN', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Step:
    """The start of a step: the lease's token (0: held elsewhere, -1: stale claim), the
    conversation's batch and its pending cancel request."""

    token: int
    batch: Batch | None
    cancel_at: float | None
    inbox_head: list[bytes] | None = None  # when no batch is open
    thread_id: str | None = None  # when no batch is open


class ConversationStore:
    def __init__(self, client: redis.Redis, *, outbound_stream: str, outbound_maxlen: int,
                 dead_letter_maxlen: int = 100_000) -> None:
        self.redis = client
        self.outbound_stream = outbound_stream
        self.outbound_maxlen = outbound_maxlen
        self.dead_letter_maxlen = dead_letter_maxlen
        self._accept = client.register_script(_ACCEPT)
        self._claim = client.register_script(_CLAIM)
        self._open_batch = client.register_script(_OPEN_BATCH)
        self._update_batch = client.register_script(_UPDATE_BATCH)
        self._publish = client.register_script(_PUBLISH)
        self._reject_head = client.register_script(_REJECT_HEAD)
        self._retire = client.register_script(_RETIRE)
        self._polled = client.register_script(_POLLED)
        self._begin = client.register_script(_BEGIN)
        self._release = client.register_script(_RELEASE)

    def close(self) -> None:
        """Disconnect the client's pool (it reconnects if used again)."""
        self.redis.connection_pool.disconnect()

    # --- producers -------------------------------------------------------------------
    def accept(self, event: InboundEvent, dedup_ttl: int) -> bool:
        """The accept step: dedup, append to the inbox, schedule. False for a repeat."""
        cid = event.conversation_id
        keys_ = [keys.dedup(event.event_id), keys.inbox(cid), keys.SCHEDULE, keys.WAKE]
        args = [cid, event.model_dump_json(), dedup_ttl, time.time()]
        return bool(self._accept(keys=keys_, args=args))

    def request_cancel(self, conversation_id: str) -> None:
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.set(keys.cancel_request(conversation_id), now, ex=3600)
        pipe.zadd(keys.SCHEDULE, {conversation_id: now}, lt=True)
        pipe.zadd(keys.SCHEDULE, {conversation_id: now}, nx=True)
        pipe.lpush(keys.WAKE, 1)
        pipe.ltrim(keys.WAKE, 0, 0)
        pipe.execute()

    # --- schedule --------------------------------------------------------------------
    def claim_due(self, now: float, limit: int, claim_until: float) -> tuple[list[str], float | None]:
        """Claim what is due; returns it and the next due time on the schedule."""
        members, next_due = self._claim(keys=[keys.SCHEDULE], args=[now, limit, claim_until])
        return [m.decode() for m in members], float(next_due) if next_due else None

    def wait_for_wake(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds, or until a producer says something is due now."""
        self.redis.blpop([keys.WAKE], timeout=max(0.001, timeout))

    def schedule(self, conversation_id: str, due: float) -> None:
        self.redis.zadd(keys.SCHEDULE, {conversation_id: due})

    def record_poll(self, batch: Batch, due: float) -> bool:
        """Count a poll, schedule the next and give the lease back, in one round trip."""
        cid = batch.conversation_id
        k = [keys.batch(cid), keys.SCHEDULE, keys.lock(cid)]
        batch.lease_released = True
        return bool(self._polled(keys=k, args=[batch.batch_id, cid, due, batch.fence]))

    def retire_if_idle(self, conversation_id: str) -> bool:
        k = [keys.batch(conversation_id), keys.inbox(conversation_id), keys.SCHEDULE]
        return bool(self._retire(keys=k, args=[conversation_id]))

    # --- conversation ----------------------------------------------------------------
    def begin_step(self, conversation_id: str, lease_seconds: float, claimed: float | None,
                   retry_due: float, inbox_head: int) -> Step:
        cid = conversation_id
        k = [keys.SCHEDULE, keys.lock(cid), keys.conversation(cid), keys.batch(cid),
             keys.cancel_request(cid), keys.inbox(cid), keys.batch_data(cid)]
        reply = self._begin(keys=k, args=[cid, "" if claimed is None else claimed,
                                          int(lease_seconds * 1000), retry_due, inbox_head])
        token = int(reply[0])
        if token <= 0:
            return Step(token, None, None)
        flat = reply[1]
        cancel_at = float(reply[2]) if reply[2] else None
        if not flat:
            thread_id = reply[4].decode() if reply[4] else None
            return Step(token, None, cancel_at, list(reply[3]), thread_id)
        batch = Batch.from_redis(dict(zip(flat[::2], flat[1::2])), reply[3])
        batch.fence = token
        return Step(token, batch, cancel_at)

    def end_step(self, conversation_id: str, token: int) -> None:
        self._release(keys=[keys.lock(conversation_id)], args=[token])

    def share_phase_durations(self, durations: list[float], keep: int) -> None:
        """Add run phase durations to the fleet's history (the newest `keep`)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(keys.PHASE_DURATIONS, *(f"{d:.3f}" for d in durations))
        pipe.ltrim(keys.PHASE_DURATIONS, 0, keep - 1)
        pipe.execute()

    def phase_durations(self, keep: int) -> list[float]:
        """The fleet's recent run phase durations, newest first."""
        durations = []
        for raw in self.redis.lrange(keys.PHASE_DURATIONS, 0, keep - 1):
            try:
                durations.append(float(raw))
            except ValueError:
                continue  # not ours: skipped
        return durations

    def thread_id(self, conversation_id: str) -> str | None:
        value = self.redis.hget(keys.conversation(conversation_id), "thread_id")
        return value.decode() if value else None

    def claim_tools(self, conversation_id: str, key: str, ttl: float) -> bool:
        """Claim one requires_action step's tool calls (`key`: run and call ids) for
        `ttl` seconds: a duplicate delivery neither runs them again nor submits twice."""
        return bool(self.redis.set(keys.tools_claim(conversation_id, key), "1", nx=True,
                                   px=int(ttl * 1000)))

    def keep_tool_outputs(self, conversation_id: str, key: str, outputs: list[dict[str, str]],
                          ttl: float) -> None:
        """Keep a step's tool outputs, whose submission failed, for the next poll to submit."""
        self.redis.set(keys.tools_claim(conversation_id, key), json.dumps(outputs), px=int(ttl * 1000))

    def kept_tool_outputs(self, conversation_id: str, key: str) -> list[dict[str, str]] | None:
        value = self.redis.get(keys.tools_claim(conversation_id, key))
        if not value or value == b"1":
            return None  # no claim, or the tools are still running
        outputs = json.loads(value)
        return outputs if isinstance(outputs, list) else None

    def forget_tool_outputs(self, conversation_id: str, key: str) -> None:
        self.redis.delete(keys.tools_claim(conversation_id, key))

    def last_run_id(self, conversation_id: str) -> str | None:
        """The run of the conversation's last published batch (Responses reconciliation)."""
        value = self.redis.hget(keys.conversation(conversation_id), "last_run_id")
        return value.decode() if value else None

    def peek_inbox(self, conversation_id: str, count: int) -> list[bytes]:
        return self.redis.lrange(keys.inbox(conversation_id), 0, count - 1)

    # --- batches ---------------------------------------------------------------------
    def load_batch(self, conversation_id: str) -> Batch | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.batch(conversation_id))
        pipe.get(keys.batch_data(conversation_id))
        fields, data = pipe.execute()
        return Batch.from_redis(fields, data) if fields else None

    def open_batch(self, batch: Batch, taken: int) -> bool:
        cid = batch.conversation_id
        fields = [x for pair in batch.to_hash().items() for x in pair]
        k = [keys.inbox(cid), keys.batch(cid), keys.batch_data(cid), keys.lock(cid)]
        return bool(self._open_batch(keys=k, args=[taken, batch.fence, batch.data_json(), *fields]))

    def save_batch(self, batch: Batch, *, due: float | None = None, release: bool = False) -> bool:
        """Write the batch's progress (and its next due time, the lease's release, and the
        batch's thread as the conversation's thread); False when it is no longer the active
        batch or a newer lease wrote it. `published` is left alone: only publish sets it."""
        cid = batch.conversation_id
        fields = [x for k, v in batch.to_hash().items() if k != "published" for x in (k, v)]
        k = [keys.batch(cid), keys.SCHEDULE, keys.lock(cid), keys.conversation(cid),
             keys.batch_data(cid)]
        args = [batch.batch_id, batch.fence, "" if due is None else due, int(release), cid,
                batch.thread_id or "", batch.data_json(), *fields]
        if release:
            batch.lease_released = True
        return bool(self._update_batch(keys=k, args=args))

    def set_fields(self, batch: Batch, fields: dict[str, str], due: float | None = None) -> None:
        """Write some fields of the active batch (fenced by batch id only: for steps that run
        without the lease, like tools) and optionally its next due time."""
        cid = batch.conversation_id
        pairs = [x for item in fields.items() for x in item]
        self._update_batch(keys=[keys.batch(cid), keys.SCHEDULE, keys.lock(cid),
                                 keys.conversation(cid), keys.batch_data(cid)],
                           args=[batch.batch_id, 0, "" if due is None else due, 0, cid, "", "", *pairs])

    def publish(self, batch: Batch, entry_json: str, *, release: bool) -> tuple[bool, bool]:
        """Publish the batch's outcome once. Returns (published now, events wait)."""
        cid = batch.conversation_id
        k = [keys.batch(cid), self.outbound_stream, keys.SCHEDULE, keys.inbox(cid),
             keys.batch_data(cid), keys.lock(cid), keys.conversation(cid)]
        args = [batch.batch_id, entry_json, self.outbound_maxlen, int(release), cid, time.time(),
                batch.fence, batch.run_id or ""]
        result = int(self._publish(keys=k, args=args))
        if result < 0:
            return False, False
        events_wait = result >= 10
        batch.lease_released = release and not events_wait
        return result % 10 == 1, events_wait

    def reject_head(self, conversation_id: str, raw: bytes, entry_json: str, reason: str) -> bool:
        k = [keys.inbox(conversation_id), self.outbound_stream, keys.DEAD_LETTERS]
        args = [raw, entry_json, self.outbound_maxlen, reason, self.dead_letter_maxlen]
        return bool(self._reject_head(keys=k, args=args))

    def dead_letter(self, raws: list[str], reason: str) -> None:
        pipe = self.redis.pipeline()
        for raw in raws:
            pipe.xadd(keys.DEAD_LETTERS, {"raw": raw, "reason": reason},
                      maxlen=self.dead_letter_maxlen, approximate=True)
        pipe.execute()

    def publish_rejection(self, entry_json: str, raw: str, reason: str) -> None:
        """Reject something that never reached an inbox (a malformed worker message)."""
        pipe = self.redis.pipeline()
        pipe.xadd(self.outbound_stream, {"data": entry_json},
                  maxlen=self.outbound_maxlen, approximate=True)
        pipe.xadd(keys.DEAD_LETTERS, {"raw": raw, "reason": reason},
                  maxlen=self.dead_letter_maxlen, approximate=True)
        pipe.execute()
