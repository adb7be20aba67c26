-- Tracks how long each HVAC unit's temperature has been off its setpoint by more than
-- TOLERANCE. ctx.state keeps when the excursion began and whether it was reported, because
-- consecutive readings may run on different instances or shards. Time is the reading's "ts"
-- when it has one, so a replayed or sped-up stream (wisp sim --speed) behaves like a live one;
-- else the node's clock.
local M = {}

local function bad_request(message)
  return { status = 400, body = { error = { kind = "invalid_argument", message = message } } }
end

function M.handle(event, ctx)
  local reading = event.json
  if type(reading) ~= "table" then
    return bad_request('send a JSON object like {"hvac":"h1","temperature":21.3,"setpoint":21} '
                       .. '(Content-Type: application/json)')
  end
  if type(reading.temperature) ~= "number" then
    return bad_request("'temperature' must be a number (degC), e.g. 21.3")
  end
  for _, field in ipairs({ "setpoint", "ts" }) do
    if reading[field] ~= nil and type(reading[field]) ~= "number" then
      return bad_request("'" .. field .. "' must be a number when given")
    end
  end
  local unit = reading.hvac
  if unit ~= nil and type(unit) ~= "string" then
    return bad_request("'hvac' must be a string, e.g. \"h1\"")
  end
  unit = unit or "unknown"

  local setpoint = reading.setpoint or tonumber(ctx.env("SETPOINT")) or 21
  local tolerance = tonumber(ctx.env("TOLERANCE")) or 2
  local hold = tonumber(ctx.env("HOLD")) or 60
  local now = reading.ts or ctx.now()
  local deviation = reading.temperature - setpoint
  local since_key, alerted_key = "hvac:" .. unit .. ":since", "hvac:" .. unit .. ":alerted"

  if math.abs(deviation) > tolerance then
    local stored = ctx.state:get(since_key)
    local since = stored and tonumber(stored)
    if since == nil or since > now then  -- a new excursion (or a clock that went back)
      since = now
      ctx.state:put(since_key, now)
    end
    local off_for = now - since
    local alerted = ctx.state:get(alerted_key) ~= nil
    if off_for >= hold and not alerted then
      ctx.state:put(alerted_key, "1")
      local direction = deviation > 0 and "too warm" or "too cold"
      ctx.emit("plant/alerts/hvac", { hvac = unit, condition = direction,
                                      temperature = reading.temperature, setpoint = setpoint,
                                      off_for_s = off_for, severity = "high" }, { qos = 1 })
      ctx.warn("hvac " .. unit .. " " .. direction .. ": " .. reading.temperature .. " degC for "
               .. off_for .. " s (setpoint " .. setpoint .. ")")
      alerted = true
    end
    return { status = 200, body = { hvac = unit, off_setpoint = true, off_for_s = off_for,
                                    alert = alerted } }
  end

  ctx.state:delete(since_key)
  if ctx.state:delete(alerted_key) then
    ctx.emit("plant/alerts/hvac", { hvac = unit, condition = "normal",
                                    temperature = reading.temperature, setpoint = setpoint,
                                    severity = "info" }, { qos = 1 })
    ctx.log("hvac " .. unit .. " back within " .. tolerance .. " K of " .. setpoint)
  end
  return { status = 200, body = { hvac = unit, off_setpoint = false, alert = false } }
end

return M
