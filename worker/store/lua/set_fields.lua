-- Writes some hash fields of the active batch, fenced by batch id only, and optionally its
-- next due time: for the tool round, which runs without the conversation's lease.
-- uses: stream_due
-- KEYS: batch schedule
-- ARGV: batch_id conversation_id due fields...
-- returns: 1 written, 0 the batch moved on
local batch, schedule = KEYS[1], KEYS[2]
local batch_id, conversation_id, due = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', batch, 'batch_id') ~= batch_id then return 0 end
if #ARGV > 3 then redis.call('HSET', batch, unpack(ARGV, 4)) end
due = stream_due(batch, due)
if due ~= '' then redis.call('ZADD', schedule, due, conversation_id) end
return 1
