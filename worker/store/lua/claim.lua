-- Claims what is due on the schedule: claimed members move to `claim_until`, so a claim
-- whose worker died comes due again by itself.
-- KEYS: schedule
-- ARGV: now limit claim_until
-- returns: {claimed members, the next due time or false}
local schedule = KEYS[1]
local now, limit, claim_until = ARGV[1], ARGV[2], ARGV[3]
local due = redis.call('ZRANGEBYSCORE', schedule, '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(due) do
  redis.call('ZADD', schedule, claim_until, member)
end
local nxt = redis.call('ZRANGE', schedule, 0, 0, 'WITHSCORES')
return {due, nxt[2] or false}
