-- Classifies a feeder reading: voltage undervoltage / overvoltage / normal against
-- NOMINAL_VOLTAGE +- VOLTAGE_TOLERANCE, current overcurrent / normal against CURRENT_LIMIT.
-- ctx.state remembers each feeder's last condition, so an alert (or an all-clear) is published
-- on plant/alerts/feeder only when a condition changes: a ten-second sag is one alert, not ten.
local M = {}

local function bad_request(message)
  return { status = 400, body = { error = { kind = "invalid_argument", message = message } } }
end

-- Publishes and logs a change of `what` ("voltage" or "current") to `condition`; returns true
-- when there was one.
local function report_change(ctx, feeder, what, condition, details)
  local key = "feeder:" .. feeder .. ":" .. what
  local previous = ctx.state:get(key) or "normal"
  if previous == condition then return false end
  ctx.state:put(key, condition)
  details.feeder = feeder
  details.condition = condition
  if condition == "normal" then
    details.cleared = previous
    details.severity = "info"
    ctx.log("feeder " .. feeder .. ": " .. previous .. " cleared")
  else
    details.severity = "high"
    ctx.warn("feeder " .. feeder .. ": " .. condition)
  end
  ctx.emit("plant/alerts/feeder", details, { qos = 1 })
  return true
end

function M.handle(event, ctx)
  local reading = event.json
  if type(reading) ~= "table" then
    return bad_request('send a JSON object like {"feeder":"f1","voltage":231.4,"current":212} '
                       .. '(Content-Type: application/json)')
  end
  if type(reading.voltage) ~= "number" then
    return bad_request("'voltage' must be a number (V), e.g. 231.4")
  end
  if reading.current ~= nil and type(reading.current) ~= "number" then
    return bad_request("'current' must be a number (A), e.g. 212")
  end
  local feeder = reading.feeder
  if feeder ~= nil and type(feeder) ~= "string" then
    return bad_request("'feeder' must be a string, e.g. \"f1\"")
  end
  feeder = feeder or "unknown"

  local nominal = tonumber(ctx.env("NOMINAL_VOLTAGE")) or 230
  local tolerance = tonumber(ctx.env("VOLTAGE_TOLERANCE")) or 0.10
  local limit = tonumber(ctx.env("CURRENT_LIMIT")) or 400
  -- Rounded to 0.1 V so that alerts say 253, not 253.00000000000003.
  local low = math.floor(nominal * (1 - tolerance) * 10 + 0.5) / 10
  local high = math.floor(nominal * (1 + tolerance) * 10 + 0.5) / 10

  local voltage = "normal"
  if reading.voltage < low then
    voltage = "undervoltage"
  elseif reading.voltage > high then
    voltage = "overvoltage"
  end
  local changes = 0
  if report_change(ctx, feeder, "voltage", voltage,
                   { voltage = reading.voltage, low = low, high = high }) then
    changes = changes + 1
  end

  local current = nil
  if reading.current ~= nil then
    current = reading.current > limit and "overcurrent" or "normal"
    if report_change(ctx, feeder, "current", current,
                     { current = reading.current, limit = limit }) then
      changes = changes + 1
    end
  end
  return { status = 200, body = { feeder = feeder, voltage = voltage, current = current,
                                  alerts = changes } }
end

return M
