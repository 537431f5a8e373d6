-- webhook_patch.lua: change a webhook endpoint's event types or state, only if it exists.
-- Enabling it also resets its run of dead letters and makes its parked lanes due now.
--
-- KEYS[1] the endpoint hash (url, events, enabled, failures, ...)
-- KEYS[2] the due sorted set: <endpoint>:<lane> -> ms the lane is next due
-- ARGV[1] the new comma-separated event types ('' = unchanged)
-- ARGV[2] '1' enable, '0' disable, '' unchanged
-- ARGV[3..] the endpoint's lane members (<endpoint>:<lane>), re-armed when enabling
-- Returns 1, or 0 when the endpoint does not exist.
-- Prelude: clock (now_ms).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'events', ARGV[1])
end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'enabled', '1', 'failures', '0')
  local now = now_ms()
  for i = 3, #ARGV do
    redis.call('ZADD', KEYS[2], 'XX', now, ARGV[i])
  end
elseif ARGV[2] == '0' then
  redis.call('HSET', KEYS[1], 'enabled', '0')
end
return 1
