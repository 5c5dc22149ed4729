-- The start of every step, in one round trip: checks the claim is still the schedule's (a
-- duplicated or overtaken message stops here), takes the lease (busy: the claim comes due
-- again soon), then returns the token, the batch, the pending cancel request and, when no
-- batch is open, the head of the inbox and the thread id.
-- KEYS: schedule lock conversation batch cancel_request inbox batch_data
-- ARGV: conversation_id claimed lease_ms retry_due inbox_head
-- returns: {-1} stale claim, {0} lease held elsewhere,
--          {token, batch hash, cancel request, batch data} or
--          {token, {}, cancel request, inbox head, thread id}
local schedule, lock, conversation, batch = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cancel_request, inbox, batch_data = KEYS[5], KEYS[6], KEYS[7]
local conversation_id, claimed, lease_ms = ARGV[1], ARGV[2], ARGV[3]
local retry_due, inbox_head = ARGV[4], ARGV[5]
if claimed ~= '' and tonumber(redis.call('ZSCORE', schedule, conversation_id)) ~= tonumber(claimed) then
  return {-1}
end
if not redis.call('SET', lock, '0', 'NX', 'PX', lease_ms) then
  if claimed ~= '' then redis.call('ZADD', schedule, retry_due, conversation_id) end
  return {0}
end
local token = redis.call('HINCRBY', conversation, 'fence', 1)
redis.call('SET', lock, token, 'PX', lease_ms)
local cancel = redis.call('GET', cancel_request)
if cancel then redis.call('DEL', cancel_request) end
local fields = redis.call('HGETALL', batch)
if #fields > 0 then return {token, fields, cancel, redis.call('GET', batch_data)} end
return {token, fields, cancel, redis.call('LRANGE', inbox, 0, inbox_head - 1),
        redis.call('HGET', conversation, 'thread_id')}
