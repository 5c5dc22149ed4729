-- A poll step's only write: counts the poll, schedules the next one, gives the lease back.
-- uses: fence stream_due
-- KEYS: batch schedule lock
-- ARGV: batch_id conversation_id due token
-- returns: 1 recorded, 0 refused (another batch, or a newer lease wrote it)
local batch, schedule, lock = KEYS[1], KEYS[2], KEYS[3]
local batch_id, conversation_id, due, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', lock) == token then redis.call('DEL', lock) end
if not fenced(batch, batch_id, token) then return 0 end
redis.call('HINCRBY', batch, 'polls', 1)
redis.call('ZADD', schedule, stream_due(batch, due), conversation_id)
return 1
