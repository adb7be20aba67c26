-- Adds 1 to "count" (or `by` from a JSON body such as {"by": 5}) and returns the new value.
local M = {}

function M.handle(event, ctx)
  local by = 1
  local body = event.json
  if type(body) == "table" and body.by ~= nil then
    if type(body.by) ~= "number" or body.by % 1 ~= 0 then
      return { status = 400,
               body = { error = { kind = "invalid_argument",
                                  message = "'by' must be an integer, e.g. {\"by\": 5}" } } }
    end
    by = body.by
  end
  local n = ctx.state:incr("count", by)
  return { status = 200, body = { count = n } }
end

return M
