-- Writes what a run's event stream brought (deltas, and the stream's cursor with them),
-- fenced by the stream's owner as the batch records it: a reader that lost its stream (a
-- takeover, an ended phase, a published batch) writes nothing. A delta of an event at or
-- before the cursor (`at`, its sequence number, of the same response) was written already,
-- by a reader whose stream was taken over while it still wrote: it is skipped, so that a
-- re-attached stream that replays from an older cursor writes each event once.
-- uses: deltas
-- The conversation goes in the owner process's set (`owned`, registry.py) with each write.
-- KEYS: batch deltas lengths owned
-- ARGV: batch_id owner cursor conversation_id maxlen ttl deltas
-- returns: -1 the batch moved on (another batch, or answered); -2 another owner (or none
-- recorded yet); else the entries written
local batch, stream, lengths, owned = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local batch_id, owner, cursor, conversation_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local maxlen, ttl, deltas = ARGV[5], ARGV[6], ARGV[7]
local found = redis.call('HMGET', batch, 'batch_id', 'stream_owner', 'published', 'stream_cursor')
if found[1] ~= batch_id or found[3] == '1' then return -1 end
if found[2] ~= owner then return -2 end
redis.call('SADD', owned, conversation_id)
local kept_run, kept_at = string.match(found[4] or '', '^(%S+) (%d+)$')
local run = string.match(cursor, '^(%S+) ')
local function seen(at) return at and kept_run and kept_run == run and tonumber(at) <= tonumber(kept_at) end
local written = 0
if deltas ~= '' then
  for _, d in ipairs(cjson.decode(deltas)) do
    if not seen(d.at) then written = written + write_delta(batch, stream, lengths, d, maxlen, ttl) end
  end
end
local at = string.match(cursor, ' (%d+)$')
if at and not seen(at) then redis.call('HSET', batch, 'stream_cursor', cursor) end
return written
