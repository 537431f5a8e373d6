-- extend_lock.lua: push a lock's expiry out only if it is still held by this token
-- (compare-and-pexpire), for the renewal watchdog.
--
-- KEYS[1] the lock key
-- ARGV[1] the holder's token   ARGV[2] new time to live in ms
-- Returns 1 when extended, 0 when the lock was not held by this token (the lease is lost).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
