-- Publishes a batch's outcome at most once, and either releases the batch (the conversation
-- goes idle, off the schedule and with its lease given back, unless events wait in its
-- inbox) or keeps it answered, written as it now is (`data`, `fields`: the batch stopping
-- its run).
-- The batch's run id becomes the conversation's last run, at publication and again at
-- release (a run confirmed after publication may have replaced it).
-- With the entry go the batch's last deltas (`deltas`: the catch-up text of its messages and
-- run.ended), in the same script, so that run.ended is written exactly once, and only
-- for a batch that had a run.started (deltas.lua).
-- uses: fence deltas
-- KEYS: batch outbound schedule inbox batch_data lock conversation delta_stream delta_lengths
-- ARGV: batch_id entry maxlen release conversation_id next_due token run_id data deltas delta_maxlen delta_ttl fields...
-- returns: -1 refused (another batch, or a newer lease); else 0 or 1 (published now),
--          plus 10 when released with events waiting (the lease is then still held)
local batch, outbound, schedule, inbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local batch_data, lock, conversation, delta_stream, delta_lengths = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local batch_id, entry, maxlen, release = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local conversation_id, next_due, token, run_id, data = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local deltas, delta_maxlen, delta_ttl = ARGV[10], ARGV[11], ARGV[12]
if not fenced(batch, batch_id, token) then return -1 end
local result = 0
if entry ~= '' and redis.call('HGET', batch, 'published') ~= '1' then
  redis.call('XADD', outbound, 'MAXLEN', '~', maxlen, '*', 'data', entry)
  redis.call('HSET', batch, 'published', '1')
  write_deltas(batch, delta_stream, delta_lengths, deltas, delta_maxlen, delta_ttl)
  result = 1
end
if run_id ~= '' and (result == 1 or release == '1') then
  redis.call('HSET', conversation, 'last_run_id', run_id)
end
if release ~= '1' then
  if #ARGV > 12 then redis.call('HSET', batch, unpack(ARGV, 13)) end
  if data ~= '' then redis.call('SET', batch_data, data) end
  return result
end
redis.call('DEL', batch, batch_data, delta_lengths)
if redis.call('LLEN', inbox) == 0 then
  redis.call('ZREM', schedule, conversation_id)
  if redis.call('GET', lock) == token then redis.call('DEL', lock) end
  return result
end
redis.call('ZADD', schedule, next_due, conversation_id)
return result + 10
