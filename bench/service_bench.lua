-- wrk script: each request carries the next token from TOKENS (one per line); from the
-- Unix time SWITCH_AT on, tokens come from TOKENS_AFTER (a key rotation mid-run); every
-- request goes to REQUEST_PATH (default /orders).
local before, after, i = {}, {}, 0
local switch_at = tonumber(os.getenv("SWITCH_AT") or "0")
local path = os.getenv("REQUEST_PATH") or "/orders"

local function load(path, into)
  if path and path ~= "" then
    for line in io.lines(path) do into[#into + 1] = line end
  end
end

init = function(args)
  load(os.getenv("TOKENS"), before)
  load(os.getenv("TOKENS_AFTER"), after)
end

request = function()
  local pool = before
  if switch_at > 0 and #after > 0 and os.time() >= switch_at then pool = after end
  i = i % #pool + 1
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. pool[i] })
end
