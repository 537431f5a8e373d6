-- prelude/clock.lua, joined before the scripts that read the time (see src/store/scripts.rs).
-- Defines:
--   now_us()  Redis' clock (TIME) in epoch microseconds. Time always comes from Redis, never
--             from a caller, so every service instance reads the same clock. It advances while a
--             script runs, so a script can measure its own work.
--   now_ms()  the same in epoch milliseconds.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function now_ms()
  return math.floor(now_us() / 1000)
end
