-- Takes one refused event out of the active batch (fenced): publishes its rejection,
-- dead-letters it and writes the batch's document without it, in one step, so that the
-- rejection goes out once and the rest of the batch goes on.
-- uses: fence
-- KEYS: batch batch_data outbound dead_letters
-- ARGV: batch_id token data entry maxlen raw reason dead_letter_maxlen
-- returns: 1 done, 0 refused (another batch, or a newer lease)
local batch, batch_data, outbound, dead_letters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local batch_id, token, data, entry, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local raw, reason, dead_letter_maxlen = ARGV[6], ARGV[7], ARGV[8]
if not fenced(batch, batch_id, token) then return 0 end
redis.call('SET', batch_data, data)
redis.call('XADD', outbound, 'MAXLEN', '~', maxlen, '*', 'data', entry)
redis.call('XADD', dead_letters, 'MAXLEN', '~', dead_letter_maxlen, '*', 'raw', raw, 'reason', reason)
return 1
