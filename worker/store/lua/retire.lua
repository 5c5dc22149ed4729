-- Takes an idle conversation (no batch, empty inbox) off the schedule.
-- KEYS: batch inbox schedule
-- ARGV: conversation_id
-- returns: 1 retired, 0 something to do (an event arrived meanwhile)
local batch, inbox, schedule = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', batch) == 1 or redis.call('LLEN', inbox) > 0 then return 0 end
redis.call('ZREM', schedule, ARGV[1])
return 1
