-- reposition.lua: send one idle driver toward a pickup spot with recent demand (batched policy,
-- `reposition_idle_drivers`). In one atomic step it checks that the driver is still available,
-- fresh and free of any order, records the instruction (so that rounds count the driver as
-- covering the spot and do not send it elsewhere before it could arrive), and appends a
-- 'driver.reposition' event (no order; the spot's coordinates) to the city's stream and its
-- Pub/Sub channels, like every other event.
--
-- KEYS[1]  drivers hash of the city: driver_id -> packed state (see prelude/codes.lua)
-- KEYS[2]  assignments hash of the city: driver_id -> order_id (active orders)
-- KEYS[3]  repositions hash of the city: driver_id -> "lat|lon|until_ms"
-- KEYS[4]  events stream of the city
-- ARGV[1] driver id   ARGV[2] latitude of the spot   ARGV[3] longitude of the spot
-- ARGV[4] driver TTL ms   ARGV[5] how long the instruction holds, ms
-- ARGV[6] events stream MAXLEN (approximate)   ARGV[7] city ops channel
-- ARGV[8] per-driver channel prefix (channel = prefix .. driver_id)   ARGV[9] city id
-- Returns {'sent', now_ms} or {'skipped', reason}: 'unknown' (no such driver), 'unavailable'
-- (not available or holding an order), 'stale' (its last position is older than the TTL).
-- Prelude: clock (now_ms), codes (unpack_state).
local id = ARGV[1]
local now = now_ms()
local packed = redis.call('HGET', KEYS[1], id)
if not packed then
  return {'skipped', 'unknown'}
end
local recorded, _, _, status = unpack_state(packed)
if status ~= 'available' or redis.call('HEXISTS', KEYS[2], id) == 1 then
  return {'skipped', 'unavailable'}
end
if now - tonumber(recorded) > tonumber(ARGV[4]) then
  return {'skipped', 'stale'}
end
redis.call('HSET', KEYS[3], id, ARGV[2] .. '|' .. ARGV[3] .. '|' .. string.format('%d', now + tonumber(ARGV[5])))
local sid = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'type', 'driver.reposition',
  'order', '', 'driver', id, 'state', 'available', 'fence', '0', 'at', tostring(now),
  'lat', ARGV[2], 'lon', ARGV[3])
local msg = cjson.encode({id = sid, type = 'driver.reposition', order_id = '', driver_id = id,
  state = 'available', fencing_token = 0, at_ms = now, city = ARGV[9],
  lat = tonumber(ARGV[2]), lon = tonumber(ARGV[3])})
redis.call('PUBLISH', ARGV[7], msg)
redis.call('PUBLISH', ARGV[8] .. id, msg)
return {'sent', now}
