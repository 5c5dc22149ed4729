-- Writes a batch's progress (fenced) and, in the same round trip, its next due time, the
-- conversation's thread id and the lease's release.
-- uses: fence stream_due
-- KEYS: batch schedule lock conversation batch_data
-- ARGV: batch_id token due release conversation_id thread_id data fields...
-- returns: 1 written, 0 refused (another batch, or a newer lease wrote it)
local batch, schedule, lock, conversation, batch_data = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local batch_id, token, due, release = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local conversation_id, thread_id, data = ARGV[5], ARGV[6], ARGV[7]
if release == '1' and redis.call('GET', lock) == token then redis.call('DEL', lock) end
if not fenced(batch, batch_id, token) then return 0 end
redis.call('HSET', batch, unpack(ARGV, 8))
if data ~= '' then redis.call('SET', batch_data, data) end
due = stream_due(batch, due)
if due ~= '' then redis.call('ZADD', schedule, due, conversation_id) end
if thread_id ~= '' then redis.call('HSET', conversation, 'thread_id', thread_id) end
return 1
