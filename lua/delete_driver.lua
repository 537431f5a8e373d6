-- delete_driver.lua: remove a driver from every index (GEO sets, last-seen, scores) and forget
-- its state.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see prelude/codes.lua)
-- KEYS[2]      liveness bucket index of that city: bucket -> lower bound of its oldest time
--              (set exact here for the driver's bucket)
-- KEYS[3]      driver score sorted set of that city
-- KEYS[4..6]   GEO sets of that city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- KEYS[7]      the driver's liveness bucket in that city (driver_id -> recorded_ms)
-- ARGV[1] driver_id
-- Returns {'ok'} | {'missing'} | {'busy'} (nothing written: the driver
-- holds an order; it is freed by the order's end or cancellation)
-- Prelude: codes (unpack_state, all_tags), buckets (refresh_bucket).
local id = ARGV[1]
local state = redis.call('HGET', KEYS[1], id)
if not state then
  return {'missing'}
end
if select(4, unpack_state(state)) == 'busy' then
  return {'busy'}
end
for s = 4, 6 do
  redis.call('ZREM', KEYS[s], all_tags(id))
end
redis.call('ZREM', KEYS[7], id)
refresh_bucket(KEYS[2], KEYS[7])
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[1], id)
return {'ok'}
