-- Opens a batch: takes its events off the inbox head and writes the batch. Refused when a
-- batch is already open or the lease is no longer ours (the inbox head we read may have
-- been taken meanwhile).
-- KEYS: inbox batch batch_data lock
-- ARGV: taken token data fields...
-- returns: 1 opened, 0 refused
local inbox, batch, batch_data, lock = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local taken, token, data = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', batch) == 1 then return 0 end
if redis.call('GET', lock) ~= token then return 0 end
redis.call('LTRIM', inbox, taken, -1)
redis.call('HSET', batch, 'fence', token, unpack(ARGV, 4))
redis.call('SET', batch_data, data)
return 1
