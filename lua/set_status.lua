-- set_status.lua: a driver goes on or off shift (available <-> offline).
-- Moves the driver between the GEO sets of its city (only while it is indexed, i.e. fresh) and
-- updates its stored state. 'busy' is set and cleared by dispatch only.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see prelude/codes.lua)
-- KEYS[2]      last-seen sorted set of the driver's city
-- KEYS[3]      driver score sorted set of that city
-- KEYS[4..6]   GEO sets of that city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- ARGV[1] driver_id   ARGV[2] 'available' | 'offline'
-- Returns one of:
--   {'ok', packed_state, now_ms}
--   {'missing'}                  no such driver
--   {'busy', packed_state}       nothing written: the driver holds an order
-- Prelude: clock (now_ms), codes (STATUS, TAG, unpack_state, pack_state).
local now = now_ms()
local id, new_status = ARGV[1], ARGV[2]
local state = redis.call('HGET', KEYS[1], id)
if not state then
  return {'missing'}
end
local recorded, lat, lon, status, vehicle, rest = unpack_state(state)
if status == 'busy' then
  return {'busy', state}
end
if status ~= new_status then
  -- Re-index only a driver that is still indexed (the sweeper removes stale ones).
  if redis.call('ZREM', KEYS[4 + STATUS[status]], TAG[vehicle] .. id) == 1 then
    redis.call('GEOADD', KEYS[4 + STATUS[new_status]], lon, lat, TAG[vehicle] .. id)
  end
  state = pack_state(recorded, lat, lon, new_status, vehicle, rest)
  redis.call('HSET', KEYS[1], id, state)
end
return {'ok', state, now}
