-- release_lock.lua: delete a lock only if it is still held by this token (compare-and-delete),
-- so a holder whose lease expired can never release a lock someone else has taken since.
--
-- KEYS[1] the lock key
-- ARGV[1] the holder's token
-- Returns 1 when released, 0 when the lock was not held by this token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
