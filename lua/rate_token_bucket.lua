-- rate_token_bucket.lua: token-bucket rate limit. The bucket holds up to ARGV[1] tokens and
-- refills at ARGV[2] tokens per second; a request takes one token. Time comes from Redis
-- (TIME), never from the clients, so every service instance sees the same bucket.
--
-- KEYS[1] the subject's bucket (hash: tokens, ms = time of the last refill)
-- ARGV[1] burst (capacity)   ARGV[2] refill rate, tokens per second
-- Returns {allowed (1|0), whole tokens left, ms until the next token, ms until the bucket is full}
-- Prelude: clock (now_ms).
local now = now_ms()
local burst, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens, last = tonumber(b[1]), tonumber(b[2])
if not tokens then
  tokens, last = burst, now
end
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
local next_token = 0
if tokens < 1 then
  next_token = math.ceil((1 - tokens) / rate * 1000)
end
return {allowed, math.floor(tokens), next_token, math.ceil((burst - tokens) / rate * 1000)}
