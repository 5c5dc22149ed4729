-- The accept step of a producer: dedup, append to the inbox, schedule, wake a scheduler.
-- KEYS: dedup inbox schedule wake
-- ARGV: conversation_id event dedup_ttl now
-- returns: 1 accepted, 0 a repeat of an accepted event id
local dedup, inbox, schedule, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local conversation_id, event, dedup_ttl, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('SET', dedup, conversation_id, 'NX', 'EX', dedup_ttl) then
  redis.call('RPUSH', inbox, event)
  if redis.call('ZADD', schedule, 'NX', now, conversation_id) == 1 then
    redis.call('LPUSH', wake, '1')
    redis.call('LTRIM', wake, 0, 0)
  end
  return 1
end
return 0
