-- delete_driver.lua: remove a driver from every index (GEO sets, last-seen, scores) and forget
-- its state.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see set_position.lua)
-- KEYS[2]      last-seen sorted set of the driver's city
-- KEYS[3]      driver score sorted set of that city
-- KEYS[4..6]   GEO sets of that city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- ARGV[1] driver_id   ARGV[2] city the caller believes the driver is in
-- Returns {'ok'} | {'missing'} | {'moved', actual_city} | {'busy'} (nothing written: the driver
-- holds an order; it is freed by the order's end or cancellation)
local id = ARGV[1]
local state = redis.call('HGET', KEYS[1], id)
if not state then
  return {'missing'}
end
local city = string.match(state, '^([^|]*)|')
if city ~= ARGV[2] then
  return {'moved', city}
end
if string.match(state, '^[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|') == 'busy' then
  return {'busy'}
end
for s = 4, 6 do
  redis.call('ZREM', KEYS[s], 'b:' .. id, 's:' .. id, 'c:' .. id, 'v:' .. id)
end
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[1], id)
return {'ok'}
