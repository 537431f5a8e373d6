-- delete_driver.lua: remove a driver from every index (GEO sets, last-seen, scores) and forget
-- its state.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see set_position.lua)
-- KEYS[2]      last-seen sorted set of the driver's city
-- KEYS[3]      driver score sorted set of that city
-- KEYS[4..18]  GEO sets of that city, five per status (available, busy, offline): the status'
--              set of every vehicle type (members 'b:id', 's:id', 'c:id', 'v:id'), then one set per
--              vehicle type (bike, scooter, car, van)
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
for s = 0, 2 do
  redis.call('ZREM', KEYS[4 + s * 5], 'b:' .. id, 's:' .. id, 'c:' .. id, 'v:' .. id)
  for v = 1, 4 do
    redis.call('ZREM', KEYS[4 + s * 5 + v], id)
  end
end
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[1], id)
return {'ok'}
