-- rate_sliding_log.lua: sliding-window-log rate limit. Keeps the times of the accepted requests
-- of the last ARGV[2] ms in a sorted set; a request is accepted while fewer than ARGV[1] are
-- logged. A rejected request is not logged, so it never counts against later ones.
--
-- KEYS[1] the subject's log (sorted set: member = request id, score = time in ms)
-- ARGV[1] limit   ARGV[2] window in ms   ARGV[3] a unique id for this request
-- Returns {allowed (1|0), remaining, ms until the oldest logged request leaves the window}
-- Prelude: clock (now_ms).
local now = now_ms()
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  count = count + 1
  allowed = 1
end
local reset = window
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now
end
return {allowed, math.max(0, limit - count), reset}
