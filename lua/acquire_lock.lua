-- acquire_lock.lua: take a lock with SET NX PX and, only if it was taken, draw a fencing number.
-- Both happen atomically, so a fencing number is never drawn for a lock that was not acquired
-- and two holders can never get the same number.
--
-- KEYS[1] the lock key
-- KEYS[2] the fencing counter (INCR; same hash tag as the lock, e.g. per city)
-- ARGV[1] the holder's random token   ARGV[2] time to live in ms
-- Returns the fencing number (integer > 0), or 0 when the lock is held by someone else.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
