-- delete_driver.lua: remove a driver from every index (GEO sets, last-seen, scores) and forget
-- its state.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see set_position.lua)
-- KEYS[2]      liveness bucket index of that city: bucket -> lower bound of its oldest time
--              (set exact here for the driver's bucket)
-- KEYS[3]      driver score sorted set of that city
-- KEYS[4..6]   GEO sets of that city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- KEYS[7]      the driver's liveness bucket in that city (driver_id -> recorded_ms)
-- ARGV[1] driver_id   ARGV[2] city the caller believes the driver is in
-- Returns {'ok'} | {'missing'} | {'busy'} (nothing written: the driver
-- holds an order; it is freed by the order's end or cancellation)
local id = ARGV[1]
local state = redis.call('HGET', KEYS[1], id)
if not state then
  return {'missing'}
end
-- The packed state's status code (see set_position.lua): b = busy.
if string.match(state, '^[^|]*|[^|]*|[^|]*|(%a)|') == 'b' then
  return {'busy'}
end
for s = 4, 6 do
  redis.call('ZREM', KEYS[s], 'b:' .. id, 's:' .. id, 'c:' .. id, 'v:' .. id)
end
redis.call('ZREM', KEYS[7], id)
local oldest = redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')
local bucket = string.match(KEYS[7], ':([^:]*)$')
if oldest[2] then
  redis.call('ZADD', KEYS[2], oldest[2], bucket)
else
  redis.call('ZREM', KEYS[2], bucket)
end
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[1], id)
return {'ok'}
