-- lock_order.lua: take an order's dispatch lock, only while the order is pending. SET NX PX with
-- the caller's random token, and a fencing number drawn from the city's counter in the same
-- step; an order that is missing or not pending is refused without taking the lock or drawing
-- a number, so a refused dispatch writes nothing.
--
-- KEYS[1] the order's lock key   KEYS[2] the city's fencing counter   KEYS[3] the order hash
-- ARGV[1] the holder's random token   ARGV[2] time to live in ms
-- Returns {fencing, state}: fencing > 0 when the lock was taken; 0 with state 'pending' when
-- another holder has it; 0 with the order's state when it is not pending ('' when missing).
local state = redis.call('HGET', KEYS[3], 'state')
if not state then
  return {0, ''}
end
if state ~= 'pending' then
  return {0, state}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {redis.call('INCR', KEYS[2]), state}
end
return {0, state}
