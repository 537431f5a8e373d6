-- rate_fixed_window.lua: fixed-window rate limit. The window starts at a subject's first request
-- and lasts ARGV[2] ms; the counter's expiry is set in the same atomic step as the first INCR,
-- so a counter can never be left without one.
--
-- KEYS[1] the subject's counter
-- ARGV[1] limit (requests per window)   ARGV[2] window in ms
-- Returns {allowed (1|0), remaining, ms until the window resets}
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  -- A counter without expiry (should not happen): give it one rather than block forever.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
local limit = tonumber(ARGV[1])
if count > limit then
  return {0, 0, ttl}
end
return {1, limit - count, ttl}
