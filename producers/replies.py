"""Reading the outbound stream with a consumer group: the reply side (contract section 2).

A `ReplyReader` is one consumer of a group. `read` returns what is due, oldest first:
replies another consumer took and left unacknowledged longer than the idle time (claimed
with XAUTOCLAIM), then new ones; `ack` acknowledges them. Delivery is at least once: a
claimed reply may have been handled already by the consumer that died holding it, so
deduplicate on `Reply.id`. What the group can no longer read (trimmed by
`OUTBOUND_MAXLEN` before anyone in the group read it) is reported as a `Gap` in the list.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Self

import redis

from worker.redis_client import make_redis, stream_entries, text
from worker.settings import Settings, get_settings

DEFAULT_CLAIM_IDLE_MS = 60_000
# A wait is cut into slices shorter than the client's socket timeout (10 s at least).
_WAIT_SLICE_S = 1.0

# Shared by the scripts: XINFO's flat replies as tables, stream id order, and how many
# entries are gone from the stream (trimmed): the counter of entries ever added less the
# length, unless entries inside it were deleted with XDEL (then nothing can tell).
_LUA_PRELUDE = """
local function map(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function older(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  return ams < bms or (ams == bms and tonumber(aseq) < tonumber(bseq))
end
local function gone_count(info)
  local first, deleted = info['first-entry'], info['max-deleted-entry-id']
  if first and deleted ~= '0-0' and not older(deleted, first[1]) then return nil end
  return info['entries-added'] - info['length']
end
"""

# A new group's read counter, which XGROUP CREATE leaves unknown: at the end, every entry
# added so far; at the beginning, those trimmed before it existed (they make no gap).
# Returns 1 made, 0 it existed.
_CREATE = _LUA_PRELUDE + """
local stream, group, position = KEYS[1], ARGV[1], ARGV[2]
local made = redis.pcall('XGROUP', 'CREATE', stream, group, position, 'MKSTREAM')
if type(made) == 'table' and made['err'] then
  if string.sub(made['err'], 1, 9) == 'BUSYGROUP' then return 0 end
  return made
end
local info = map(redis.call('XINFO', 'STREAM', stream))
if position == '$' then
  redis.call('XGROUP', 'SETID', stream, group, info['last-generated-id'],
             'ENTRIESREAD', string.format('%d', info['entries-added']))
elseif gone_count(info) then
  redis.call('XGROUP', 'SETID', stream, group, position, 'ENTRIESREAD', string.format('%d', gone_count(info)))
end
return 1
"""

# One step, so that no trimming can fall between the look at the group and its read:
# compare the group's position with the stream's first entry, count what was trimmed
# unread, set the group's read counter past it (XREADGROUP counts the entries it delivers,
# not those it jumps, so the same loss would be counted again), then read new entries.
# Returns {status, lost, after, before, last_id, rows}; lost: -2 no gap, -1 not knowable.
_READ_NEW = _LUA_PRELUDE + """
local stream, group = KEYS[1], ARGV[1]
if redis.call('EXISTS', stream) == 0 then return {'nogroup'} end
local g
for _, flat in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local t = map(flat)
  if t['name'] == group then g = t end
end
if not g then return {'nogroup'} end
local info = map(redis.call('XINFO', 'STREAM', stream))
local lost, after, first = -2, g['last-delivered-id'], info['first-entry']
local before = ''
if first then before = first[1] end
if first and older(after, before) then
  local gone, read = gone_count(info), g['entries-read']
  if not (gone and read) then lost = -1 elseif gone > read then lost = gone - read end
  if gone then redis.call('XGROUP', 'SETID', stream, group, after, 'ENTRIESREAD', string.format('%d', gone)) end
end
local rows = redis.call('XREADGROUP', 'GROUP', group, ARGV[2], 'COUNT', ARGV[3], 'STREAMS', stream, '>')
return {'ok', lost, after, before, info['last-generated-id'], rows and rows[1][2] or {}}
"""


@dataclass(frozen=True)
class Reply:
    """One outbound entry: its stream id (the same on every delivery) and its JSON."""

    id: str
    data: dict[str, Any]  # the entry as contract section 2 specifies it
    claimed: bool = False  # taken from a consumer that left it unacknowledged: maybe handled
    malformed: str | None = None  # set (and data {}) when the entry holds no JSON object

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))

    @property
    def conversation_id(self) -> str | None:
        value = self.data.get("conversation_id")
        return value if isinstance(value, str) else None

    @property
    def event_ids(self) -> list[str]:
        return [str(e) for e in self.data.get("event_ids") or []]

    @property
    def text(self) -> str:
        """The assistant messages' text, oldest first, separated by blank lines."""
        messages = self.data.get("messages") or []
        return "\n\n".join(str(m.get("text", "")) for m in messages if isinstance(m, dict))

    @property
    def error(self) -> dict[str, Any] | None:
        value = self.data.get("error")
        return value if isinstance(value, dict) else None


GapKind = Literal["unread", "unacknowledged", "group_deleted"]


@dataclass(frozen=True)
class Gap:
    """Replies this group will never read. `unread`: trimmed (`OUTBOUND_MAXLEN`) before
    anyone in the group read them, between `after` and `before`; `unacknowledged`: read by
    a consumer of the group and trimmed before it acknowledged them (`ids`; it may have
    handled them); `group_deleted`: the group (or the stream) was deleted, and is made again
    at the start of what the stream holds. `lost` is how many, None when it cannot be told."""

    kind: GapKind
    lost: int | None
    after: str | None = None
    before: str | None = None
    ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        count = "an unknown number of" if self.lost is None else str(self.lost)
        where = {"unread": f"trimmed unread (after {self.after}, before {self.before})",
                 "unacknowledged": "trimmed while unacknowledged",
                 "group_deleted": "lost with the deleted group"}[self.kind]
        return f"{count} replies {where}"


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def parse_entry(entry_id: str, fields: dict[bytes, bytes], claimed: bool = False) -> Reply:
    """An outbound entry as a Reply; one without a JSON object in `data` is marked malformed."""
    raw = fields.get(b"data")
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Reply(entry_id, {}, claimed, "no JSON object in the field data")
    return Reply(entry_id, data, claimed)


def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class _GroupGone(Exception):
    """The group (or the whole stream) was deleted under the reader."""


class ReplyReader:
    """One consumer (`consumer`, default host-pid) of the group `group` on the outbound
    stream. A new group starts at the stream's end (entries published from its creation
    on), or at its beginning with `start="beginning"`; an existing group keeps its place.
    Entries another consumer left unacknowledged for `claim_idle_ms` are claimed. Use a
    reader from one thread at a time (a reader per thread, each with its own name)."""

    def __init__(self, group: str, consumer: str | None = None, *,
                 start: Literal["end", "beginning"] = "end", claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
                 settings: Settings | None = None, client: redis.Redis | None = None) -> None:
        if not group or consumer == "":
            raise ValueError("group and consumer names must not be empty")
        if start not in ("end", "beginning"):
            raise ValueError(f"start must be 'end' or 'beginning', not {start!r}")
        if claim_idle_ms < 0:
            raise ValueError("claim_idle_ms must be 0 or more")
        self.settings = settings or get_settings()
        self.stream = self.settings.outbound_stream
        self.group = group
        self.consumer = consumer or default_consumer()
        self.start = start
        self.claim_idle_ms = claim_idle_ms
        self.redis: redis.Redis = client or make_redis(self.settings)
        self._owns_client = client is None
        self._create = self.redis.register_script(_CREATE)
        self._read_new = self.redis.register_script(_READ_NEW)
        self._group_ready = False
        self._claim_cursor = "0-0"  # XAUTOCLAIM scans the pending list in slices

    def close(self) -> None:
        """Disconnect the pool this reader made; a client passed in is left to its owner."""
        if self._owns_client:
            self.redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ensure_group(self) -> bool:
        """Create the group unless it exists; True when this call made it. The first
        `read` calls it: a group starting at the end reads what is published from then on."""
        created = self._create_group("$" if self.start == "end" else "0")
        self._group_ready = True
        return created

    def read(self, count: int = 100, block_ms: int = 5000) -> list[Reply | Gap]:
        """Up to `count` replies, oldest first: claimed ones, then new ones; waits up to
        `block_ms` (0: not at all) while there are none. A `Gap` stands where replies the
        group can no longer read were."""
        if count < 1 or block_ms < 0:
            raise ValueError("count must be 1 or more and block_ms 0 or more")
        if not self._group_ready:
            self.ensure_group()
        try:
            return self._read(count, block_ms)
        except _GroupGone:
            # Deleted under us: what the stream holds now is all unread by this group.
            self._create_group("0")
            self._claim_cursor = "0-0"
            return [Gap("group_deleted", None)]

    def ack(self, entries: Iterable[str | Reply | Gap]) -> int:
        """Acknowledge replies (or their ids; gaps are skipped); returns how many were pending."""
        ids = [e if isinstance(e, str) else e.id for e in entries if not isinstance(e, Gap)]
        if not ids:
            return 0
        acked: Any = self.redis.xack(self.stream, self.group, *ids)
        return int(acked)

    def _create_group(self, position: str) -> bool:
        return bool(self._create(keys=[self.stream], args=[self.group, position]))

    def _read(self, count: int, block_ms: int) -> list[Reply | Gap]:
        deadline = time.monotonic() + block_ms / 1000
        items = self._claim(count)
        while True:
            wanted = count - sum(isinstance(item, Reply) for item in items)
            if wanted == 0:
                return items
            new, last_id = self._new(wanted)
            items += new
            remaining = deadline - time.monotonic()
            if items or remaining <= 0:
                return items
            # Wait for anything newer without touching the group, then read it in one step
            # with the gap check (a blocking XREADGROUP would skip a gap unseen).
            self.redis.xread({self.stream: last_id}, count=1,
                             block=max(1, int(min(remaining, _WAIT_SLICE_S) * 1000)))

    def _claim(self, count: int) -> list[Reply | Gap]:
        try:
            reply: Any = self.redis.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                               self._claim_cursor, count=count)
        except redis.ResponseError as exc:
            if str(exc).startswith("NOGROUP"):
                raise _GroupGone from exc
            raise
        cursor, rows, deleted = reply
        self._claim_cursor = text(cursor)
        items: list[Reply | Gap] = []
        if deleted:
            items.append(Gap("unacknowledged", len(deleted), ids=tuple(text(i) for i in deleted)))
        items += [parse_entry(entry_id, fields, claimed=True) for entry_id, fields in stream_entries(rows)]
        return items

    def _new(self, count: int) -> tuple[list[Reply | Gap], str]:
        result: Any = self._read_new(keys=[self.stream], args=[self.group, self.consumer, count])
        if text(result[0]) != "ok":
            raise _GroupGone
        _, lost, after, before, last_id, rows = result
        items: list[Reply | Gap] = []
        if lost not in (-2, 0):
            items.append(Gap("unread", None if lost == -1 else int(lost), text(after), text(before)))
        items += [parse_entry(text(entry_id), _fields(flat), claimed=False) for entry_id, flat in rows]
        return items, text(last_id)
