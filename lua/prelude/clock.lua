-- prelude/clock.lua, joined before the scripts that read the time (see src/store/scripts.rs).
-- Defines:
--   now_ms()  Redis' clock (TIME) in epoch milliseconds. Time always comes from Redis, never
--             from a caller, so every service instance reads the same clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
