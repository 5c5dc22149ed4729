-- Removes an invalid event from the head of the inbox, publishes its rejection and
-- dead-letters it.
-- KEYS: inbox outbound dead_letters
-- ARGV: raw entry maxlen reason dead_letter_maxlen
-- returns: 1 rejected, 0 the head is another event now
local inbox, outbound, dead_letters = KEYS[1], KEYS[2], KEYS[3]
local raw, entry, maxlen, reason, dead_letter_maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('LINDEX', inbox, 0) ~= raw then return 0 end
redis.call('LPOP', inbox)
redis.call('XADD', outbound, 'MAXLEN', '~', maxlen, '*', 'data', entry)
redis.call('XADD', dead_letters, 'MAXLEN', '~', dead_letter_maxlen, '*', 'raw', raw, 'reason', reason)
return 1
