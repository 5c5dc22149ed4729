-- A step's next due time, brought forward to the moment the batch's stream reader stored a
-- state the worker acts on (stream_state.lua), should that have come while the step ran:
-- the step's own due time (a safety poll) would otherwise overwrite it. Included by the
-- scripts whose header says `uses: stream_due`.
local function stream_due(batch, due)
  if due == '' then return due end
  local ended = redis.call('HGET', batch, 'stream_ended')
  if not ended or ended == '' then return due end
  local owner, at = string.match(ended, '^(.*) (%S+)$')
  if owner and owner == redis.call('HGET', batch, 'stream_owner') and tonumber(at) < tonumber(due) then
    return at
  end
  return due
end
