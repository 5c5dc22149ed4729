-- A batch write is fenced twice: by batch id (the batch is still the active one) and by the
-- lease's fencing token (no newer lease holder wrote it since). Included by the scripts
-- whose header says `uses: fence`.
local function fenced(batch_key, batch_id, token)
  if redis.call('HGET', batch_key, 'batch_id') ~= batch_id then return false end
  if tonumber(redis.call('HGET', batch_key, 'fence') or '0') > tonumber(token) then return false end
  redis.call('HSET', batch_key, 'fence', token)
  return true
end
