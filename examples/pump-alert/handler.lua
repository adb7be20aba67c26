-- Reads {"pump": "p1", "vibration": 9.2} and compares the vibration with VIBRATION_LIMIT.
-- Above the limit it publishes an alert on plant/alerts/pump (QoS 1) and logs a warning; while
-- a pump stays above it, at most once every REPEAT_AFTER seconds (a worn bearing read once a
-- second is not a new alarm every second). The reply says "alert" for every reading above.
local M = {}

local function bad_request(message)
  return { status = 400, body = { error = { kind = "invalid_argument", message = message } } }
end

function M.handle(event, ctx)
  local reading = event.json
  if type(reading) ~= "table" then
    return bad_request('send a JSON object like {"pump":"p1","vibration":9.2} '
                       .. '(Content-Type: application/json)')
  end
  if type(reading.vibration) ~= "number" then
    return bad_request("'vibration' must be a number (mm/s), e.g. 9.2")
  end
  local pump = reading.pump
  if pump ~= nil and type(pump) ~= "string" then
    return bad_request("'pump' must be a string, e.g. \"p1\"")
  end
  pump = pump or "unknown"

  local limit = tonumber(ctx.env("VIBRATION_LIMIT")) or 7.1
  if reading.vibration > limit then
    -- The key expires after REPEAT_AFTER seconds: while it exists this pump was alerted lately.
    local repeat_after = tonumber(ctx.env("REPEAT_AFTER")) or 60
    local recent_key = "alerted:" .. pump
    if ctx.state:get(recent_key) == nil then
      ctx.state:put(recent_key, reading.vibration, repeat_after)
      local alert = { pump = pump, vibration = reading.vibration, limit = limit, severity = "high" }
      ctx.emit("plant/alerts/pump", alert, { qos = 1 })
      ctx.warn("pump " .. pump .. " vibration " .. reading.vibration .. " above limit " .. limit)
    end
    return { status = 200, body = { alert = true, pump = pump, vibration = reading.vibration,
                                    limit = limit, severity = "high" } }
  end
  return { status = 200, body = { alert = false, pump = pump, vibration = reading.vibration,
                                  limit = limit } }
end

return M
