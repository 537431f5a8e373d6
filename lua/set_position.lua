-- set_position.lua: store one driver position atomically.
-- Rejects a position older than the stored one (stale) and one too far in the future; otherwise
-- moves the driver to the GEO set of its (status, vehicle type) in the new city, stores its state
-- and its last-seen time. A driver changing city leaves every index of the previous city.
--
-- KEYS[1]      drivers hash (global): driver_id -> packed state
--              "city|recorded_ms|lat|lon|status|vehicle|accuracy_m|heading_deg|speed_mps"
-- KEYS[2]      last-seen sorted set of the new city (score = recorded_ms)
-- KEYS[3..14]  GEO sets of the new city, status-major: (available, busy, offline) x (bike, scooter, car, van)
-- KEYS[15]     last-seen sorted set of the previous city     (only when ARGV[12] ~= '')
-- KEYS[16..27] GEO sets of the previous city, same order     (only when ARGV[12] ~= '')
-- ARGV[1] driver_id   ARGV[2] new city   ARGV[3] lon   ARGV[4] lat   ARGV[5] recorded_ms
-- ARGV[6] requested status: '' (keep; new drivers start available), 'available' or 'offline'
-- ARGV[7] vehicle type: '' (keep; new drivers are 'car') or bike|scooter|car|van
-- ARGV[8] accuracy_m, ARGV[9] heading_deg, ARGV[10] speed_mps ('' when absent)
-- ARGV[11] allowed clock skew into the future, ms
-- ARGV[12] previous city whose keys are passed as KEYS[15..27], or ''
-- Returns one of:
--   {'ok', packed_state, now_ms}
--   {'stale', stored_recorded_ms, now_ms}     nothing written
--   {'future', now_ms}                        nothing written
--   {'moved', previous_city}                  nothing written: call again with that city's keys
local STATUS = {available = 0, busy = 1, offline = 2}
local VEHICLE = {bike = 0, scooter = 1, car = 2, van = 3}
local function geo_key(base, status, vehicle)
  return KEYS[base + STATUS[status] * 4 + VEHICLE[vehicle]]
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, city = ARGV[1], ARGV[2]
local recorded = tonumber(ARGV[5])
if recorded > now + tonumber(ARGV[11]) then
  return {'future', now}
end

local prev = redis.call('HGET', KEYS[1], id)
local status, vehicle = 'available', 'car'
local prev_city, prev_status, prev_vehicle
if prev then
  local pc, pr, _, _, ps, pv = string.match(prev, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
  prev_city, prev_status, prev_vehicle = pc, ps, pv
  if prev_city ~= city and prev_city ~= ARGV[12] then
    return {'moved', prev_city}
  end
  if recorded < tonumber(pr) then
    return {'stale', tonumber(pr), now}
  end
  status, vehicle = prev_status, prev_vehicle
end
-- Only dispatch moves a driver into or out of 'busy'; a phone cannot override it.
if ARGV[6] ~= '' and status ~= 'busy' then
  status = ARGV[6]
end
if ARGV[7] ~= '' then
  vehicle = ARGV[7]
end

local new_geo = geo_key(3, status, vehicle)
if prev then
  if prev_city ~= city then
    redis.call('ZREM', geo_key(16, prev_status, prev_vehicle), id)
    redis.call('ZREM', KEYS[15], id)
  else
    local old_geo = geo_key(3, prev_status, prev_vehicle)
    if old_geo ~= new_geo then
      redis.call('ZREM', old_geo, id)
    end
  end
end
redis.call('GEOADD', new_geo, ARGV[3], ARGV[4], id)
redis.call('ZADD', KEYS[2], recorded, id)
local state = table.concat({city, ARGV[5], ARGV[4], ARGV[3], status, vehicle, ARGV[8], ARGV[9], ARGV[10]}, '|')
redis.call('HSET', KEYS[1], id, state)
return {'ok', state, now}
