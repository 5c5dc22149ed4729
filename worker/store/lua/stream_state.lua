-- A run's event stream reached a state the worker acts on (tool calls, an ending) or
-- broke: the state is stored for the next step, which is due at once and uses it instead
-- of polling. Fenced by the stream's owner as stream_write.lua is.
-- The conversation leaves the owner process's set (`owned`, registry.py).
-- KEYS: batch schedule wake owned
-- ARGV: batch_id owner conversation_id state now
-- returns: 1 stored; -1 the batch moved on; -2 another owner (or none recorded yet)
local batch, schedule, wake, owned = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local batch_id, owner, conversation_id, state, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local found = redis.call('HMGET', batch, 'batch_id', 'stream_owner', 'published')
if found[1] ~= batch_id or found[3] == '1' then return -1 end
if found[2] ~= owner then return -2 end
redis.call('HSET', batch, 'stream_run', state, 'stream_ended', owner .. ' ' .. now)
redis.call('SREM', owned, conversation_id)
redis.call('ZADD', schedule, now, conversation_id)
redis.call('LPUSH', wake, '1')
redis.call('LTRIM', wake, 0, 0)
return 1
