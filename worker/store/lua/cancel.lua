-- A producer's cancel request, recorded only when the conversation has an active batch (one
-- not answered yet): then the conversation is due now and a sleeping scheduler is woken.
-- Idle, nothing is written: a batch opened later was opened after the request.
-- KEYS: batch cancel_request schedule wake
-- ARGV: conversation_id now ttl
-- returns: 1 requested (a batch was active), 0 nothing to cancel
local batch, cancel_request, schedule, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local conversation_id, now, ttl = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', batch) == 0 or redis.call('HGET', batch, 'published') == '1' then
  return 0
end
redis.call('SET', cancel_request, now, 'EX', ttl)
-- LT lowers a later due time and adds the member when it is missing.
redis.call('ZADD', schedule, 'LT', now, conversation_id)
redis.call('LPUSH', wake, '1')
redis.call('LTRIM', wake, 0, 0)
return 1
