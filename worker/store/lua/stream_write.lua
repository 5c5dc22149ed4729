-- Writes what a run's event stream brought (deltas, and the stream's cursor with them),
-- fenced by the stream's owner as the batch records it: a reader that lost its stream (a
-- takeover, an ended phase, a published batch) writes nothing.
-- uses: deltas
-- KEYS: batch deltas lengths
-- ARGV: batch_id owner cursor maxlen ttl deltas
-- returns: -1 the batch moved on (another batch, or answered); -2 another owner (or none
-- recorded yet); else the entries written
local batch, stream, lengths = KEYS[1], KEYS[2], KEYS[3]
local batch_id, owner, cursor, maxlen, ttl, deltas = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local found = redis.call('HMGET', batch, 'batch_id', 'stream_owner', 'published')
if found[1] ~= batch_id or found[3] == '1' then return -1 end
if found[2] ~= owner then return -2 end
if cursor ~= '' then redis.call('HSET', batch, 'stream_cursor', cursor) end
return write_deltas(batch, stream, lengths, deltas, maxlen, ttl)
