-- Writes to a conversation's delta stream (docs/contract.md, "Deltas"), included by the
-- scripts whose header says `uses: deltas`. Each entry gets the batch's next `seq` from a
-- counter in the batch hash (`delta_seq`), so that seq strictly increases within a batch
-- whoever writes. `delta_run` holds the run of the batch's latest run.started: that is
-- written once per run, and nothing else is written before one. The lengths hash keeps,
-- per message, the bytes of its text published so far (reset by a new run.started).
-- `deltas`: a JSON list of {type, run, entry, message_id, text, catch_up}, `entry` being
-- the entry's JSON object without `seq` (and `text`), which the script adds.
local function delta_entry(batch, stream, head, extra, maxlen, ttl)
  local seq = redis.call('HINCRBY', batch, 'delta_seq', 1)
  local data = string.sub(head, 1, -2) .. extra .. ',"seq":' .. seq .. '}'
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'data', data)
  redis.call('EXPIRE', stream, ttl)
end

-- A message's text: the delta as given, or (catch_up) the message's whole text of which
-- only what was not published yet is written.
local function message_delta(batch, stream, lengths, d, maxlen, ttl)
  local kept = tonumber(redis.call('HGET', lengths, d.message_id) or '0')
  local part = d.text
  if d.catch_up then part = string.sub(d.text, kept + 1) end
  if part == '' then return 0 end
  redis.call('HSET', lengths, d.message_id, kept + #part)
  -- Kept for the batch's life (publish.lua deletes it with the batch), whatever the stream's
  -- own expiry: a catch-up after the lengths expired would write the text twice.
  redis.call('EXPIRE', lengths, math.max(tonumber(ttl), 86400))
  delta_entry(batch, stream, d.entry, ',"text":' .. cjson.encode(part), maxlen, ttl)
  return 1
end

local function write_delta(batch, stream, lengths, d, maxlen, ttl)
  local current = redis.call('HGET', batch, 'delta_run')
  if d.type == 'run.started' then
    if current == d.run then return 0 end
    redis.call('HSET', batch, 'delta_run', d.run)
    redis.call('DEL', lengths)
  elseif not current then
    return 0
  elseif d.type == 'message.delta' then
    return message_delta(batch, stream, lengths, d, maxlen, ttl)
  end
  delta_entry(batch, stream, d.entry, '', maxlen, ttl)
  return 1
end

-- Writes the deltas in order; how many were written.
local function write_deltas(batch, stream, lengths, deltas, maxlen, ttl)
  if deltas == '' then return 0 end
  local written = 0
  for _, d in ipairs(cjson.decode(deltas)) do
    written = written + write_delta(batch, stream, lengths, d, maxlen, ttl)
  end
  return written
end
