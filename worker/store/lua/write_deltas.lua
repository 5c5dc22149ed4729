-- Writes deltas of the active batch to its conversation's delta stream, fenced as every
-- write of a step is (a worker that lost the conversation writes nothing).
-- uses: fence deltas
-- KEYS: batch deltas lengths
-- ARGV: batch_id token maxlen ttl deltas
-- returns: -1 refused (another batch, or a newer lease); else the entries written
local batch, stream, lengths = KEYS[1], KEYS[2], KEYS[3]
local batch_id, token, maxlen, ttl, deltas = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not fenced(batch, batch_id, token) then return -1 end
return write_deltas(batch, stream, lengths, deltas, maxlen, ttl)
