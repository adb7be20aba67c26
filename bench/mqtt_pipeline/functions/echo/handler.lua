-- Every event is an action: forward the payload as is (no decode in Lua, no table).
local OUT = "bench/echo/out"
local QOS1 = { qos = 1 }
local M = {}

function M.handle(event, ctx)
  ctx.emit(OUT, event.body, QOS1)
end

return M
