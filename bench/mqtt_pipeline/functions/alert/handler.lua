-- Threshold check written for speed: constants hoisted, no logging, no table built for the
-- common case. The alert wraps the reading's own text, so it keeps "seq" and "t" exact (the
-- benchmark's subscriber reads them to count and time the alert).
local LIMIT = 7.1 -- mm/s
local OUT = "bench/alert/out"
local QOS1 = { qos = 1 }
local M = {}

function M.handle(event, ctx)
  local reading = event.json
  if type(reading) ~= "table" then return end -- not a JSON object: no reading, no action
  local vibration = reading.vibration
  if type(vibration) == "number" and vibration > LIMIT then
    ctx.emit(OUT, '{"alert":"vibration","limit":7.1,"reading":' .. event.body .. '}', QOS1)
  end
end

return M
