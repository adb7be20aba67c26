-- Answers every call with the same text (200, text/plain).
local M = {}

function M.handle(event, ctx)
  return "Hello from wisp\n"
end

return M
