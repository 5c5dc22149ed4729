-- Gives the lease back, only when it is still ours.
-- KEYS: lock
-- ARGV: token
-- returns: 1 released, 0 not ours (expired, or taken by another worker)
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
