-- touch_session.lua: use a driver session: refuse it past its absolute expiry or when its API
-- key was revoked (deleting it), otherwise extend its idle expiry (sliding expiration) and
-- return who it belongs to.
--
-- KEYS[1] the session hash (named after the SHA-256 of the session token; it holds no secret):
--         key_id, role, driver, created (ms), expires (absolute, ms)
-- KEYS[2] the API key index hash: key_id -> key metadata (a revoked key is absent)
-- ARGV[1] idle timeout in ms
-- Returns {key_id, role, driver, expires} or {} when the session is unknown, expired or revoked.
-- Prelude: clock (now_ms).
local s = redis.call('HMGET', KEYS[1], 'key_id', 'role', 'driver', 'expires')
if not s[1] then
  return {}
end
local now = now_ms()
if now >= tonumber(s[4]) or redis.call('HEXISTS', KEYS[2], s[1]) == 0 then
  redis.call('DEL', KEYS[1])
  return {}
end
local idle = math.min(tonumber(ARGV[1]), tonumber(s[4]) - now)
redis.call('PEXPIRE', KEYS[1], idle)
return {s[1], s[2], s[3], s[4]}
