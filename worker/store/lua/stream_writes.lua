-- The stream readers' writes of a few milliseconds, all in one call (worker/streams/writes.py):
-- a few hundred streams each bringing a delta every 100 ms cost one call, not hundreds.
-- Each write is one of:
--   'd' what a run's event stream brought: its deltas and its cursor. A delta of an event at
--       or before the stored cursor (`at`, its sequence number, of the same response) was
--       written already, by a reader taken over while it still wrote: it is skipped, so that a
--       re-attached stream replaying from an older cursor writes each event once. The
--       conversation goes in the owner process's set (`owned`, registry.py).
--   's' a state the worker acts on (tool calls, an ending) or a break: stored for the next
--       step, which is due at once and uses it instead of polling; the conversation leaves
--       the owner's set.
-- Both are fenced by the stream's owner as the batch records it: a reader that lost its
-- stream (a takeover, an ended phase, a published batch) writes nothing.
-- uses: deltas
-- KEYS: owned schedule wake
-- ARGV: now maxlen ttl batch_prefix deltas_prefix lengths_prefix writes
-- writes: a JSON list, per write [kind, batch_id, owner, conversation_id, then for 'd' the
--   cursor and a list of [message_id, entry, text, at] (at -1: no sequence number), for 's'
--   the state]: one argument, since redis-py packs each argument in Python (a few us each).
--   For the same reason a write's own keys (its batch, delta stream and lengths) are made
--   here from its conversation id and the prefixes rather than passed in KEYS: a window's
--   hundred keys cost more to pack than its writes (measured). The worker's Redis is one
--   server (no cluster), where a script may do so.
-- returns: per write, -1 the batch moved on (another batch, or answered); -2 another owner
--   (or none recorded yet); else the entries written ('d') or 1 ('s')
local owned, schedule, wake = KEYS[1], KEYS[2], KEYS[3]
local now, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3]
local batch_prefix, deltas_prefix, lengths_prefix = ARGV[4], ARGV[5], ARGV[6]

local function fence(batch, batch_id, owner)
  local found = redis.call('HMGET', batch, 'batch_id', 'stream_owner', 'published', 'stream_cursor')
  if found[1] ~= batch_id or found[3] == '1' then return -1 end
  if found[2] ~= owner then return -2 end
  return 0, found[4]
end

local function write_texts(batch, stream, lengths, kept, cursor, texts)
  local kept_run, kept_at = string.match(kept or '', '^(%S+) (%d+)$')
  local run = string.match(cursor, '^(%S+) ')
  local function seen(n) return n and kept_run and kept_run == run and tonumber(n) <= tonumber(kept_at) end
  local written = 0
  for _, t in ipairs(texts) do
    if not seen(t[4] >= 0 and t[4] or nil) then
      local d = {type = 'message.delta', message_id = t[1], entry = t[2], text = t[3]}
      written = written + write_delta(batch, stream, lengths, d, maxlen, ttl)
    end
  end
  local last = string.match(cursor, ' (%d+)$')
  if last and not seen(last) then redis.call('HSET', batch, 'stream_cursor', cursor) end
  return written
end

local function store_state(batch, owner, conversation_id, state)
  redis.call('HSET', batch, 'stream_run', state, 'stream_ended', owner .. ' ' .. now)
  redis.call('SREM', owned, conversation_id)
  redis.call('ZADD', schedule, now, conversation_id)
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
  return 1
end

local results = {}
for i, w in ipairs(cjson.decode(ARGV[7])) do
  local kind, batch_id, owner, conversation_id = w[1], w[2], w[3], w[4]
  local batch = batch_prefix .. conversation_id
  local stream, lengths = deltas_prefix .. conversation_id, lengths_prefix .. conversation_id
  local refused, kept = fence(batch, batch_id, owner)
  if refused ~= 0 then
    results[i] = refused
  elseif kind == 'd' then
    redis.call('SADD', owned, conversation_id)
    results[i] = write_texts(batch, stream, lengths, kept, w[5], w[6])
  else
    results[i] = store_state(batch, owner, conversation_id, w[5])
  end
end
return results
