-- webhook_claim.lua: take the webhook lane that has been due longest, for one sender: its due
-- time becomes the end of the lease, so a lane whose sender dies is due again then and another
-- sender sends its head again (at least once).
--
-- KEYS[1] the due sorted set: <endpoint>:<lane> -> ms the lane is next due
-- KEYS[2] the lease hash: <endpoint>:<lane> -> token, <endpoint>:<lane>:tries -> n
-- ARGV[1] the lease in ms
-- ARGV[2] the sender's random token
-- Returns {member, tries} (the failed attempts of the lane's head), or {} when none is due.
-- Prelude: clock (now_ms).
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
if #due == 0 then
  return {}
end
local member = due[1]
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), member)
redis.call('HSET', KEYS[2], member, ARGV[2])
local tries = redis.call('HGET', KEYS[2], member .. ':tries') or '0'
return {member, tries}
