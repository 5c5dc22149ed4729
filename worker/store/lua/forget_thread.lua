-- Forgets the conversation's thread, and its last run (on that thread), when the server
-- lost it: the next run starts a new thread. Only that thread: a newer one is kept.
-- KEYS: conversation
-- ARGV: thread_id
-- returns: 1 forgotten, 0 the conversation holds another thread (or none)
local conversation, thread_id = KEYS[1], ARGV[1]
if redis.call('HGET', conversation, 'thread_id') ~= thread_id then return 0 end
redis.call('HDEL', conversation, 'thread_id', 'last_run_id')
return 1
