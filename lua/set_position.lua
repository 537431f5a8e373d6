-- set_position.lua: store one driver position atomically.
-- Rejects a position older than the stored one (stale) and one too far in the future; otherwise
-- moves the driver to the GEO set of its (status, vehicle type) in the new city, stores its state
-- and its last-seen time. A driver changing city leaves every index of the previous city.
--
-- KEYS[1]      drivers hash (global): driver_id -> packed state
--              "city|recorded_ms|lat|lon|status|vehicle|accuracy_m|heading_deg|speed_mps"
-- KEYS[2]      last-seen sorted set of the new city (score = recorded_ms)
-- KEYS[3..17]  GEO sets of the new city, five per status (available, busy, offline): first the
--              status' set of every vehicle type (members tagged 'b:id', 's:id', 'c:id', 'v:id' so
--              a search of all vehicles learns each driver's type), then one set per vehicle type
--              (bike, scooter, car, van; plain ids)
-- KEYS[18]     last-seen sorted set of the previous city     (only when ARGV[12] ~= '')
-- KEYS[19..33] GEO sets of the previous city, same order     (only when ARGV[12] ~= '')
-- ARGV[1] driver_id   ARGV[2] new city   ARGV[3] lon   ARGV[4] lat   ARGV[5] recorded_ms
-- ARGV[6] requested status: '' (keep; new drivers start available), 'available' or 'offline'
-- ARGV[7] vehicle type: '' (keep; new drivers are 'car') or bike|scooter|car|van
-- ARGV[8] accuracy_m, ARGV[9] heading_deg, ARGV[10] speed_mps ('' when absent)
-- ARGV[11] allowed clock skew into the future, ms
-- ARGV[12] previous city whose keys are passed as KEYS[18..33], or ''
-- Returns one of:
--   {'ok', packed_state, now_ms}
--   {'stale', stored_recorded_ms, now_ms}     nothing written
--   {'future', now_ms}                        nothing written
--   {'moved', previous_city}                  nothing written: call again with that city's keys
local STATUS = {available = 0, busy = 1, offline = 2}
local VEHICLE = {bike = 1, scooter = 2, car = 3, van = 4}
local TAG = {bike = 'b:', scooter = 's:', car = 'c:', van = 'v:'}
local function unindex(base, status, vehicle, id)
  redis.call('ZREM', KEYS[base + STATUS[status] * 5], TAG[vehicle] .. id)
  redis.call('ZREM', KEYS[base + STATUS[status] * 5 + VEHICLE[vehicle]], id)
end
local function index(base, status, vehicle, id, lon, lat)
  redis.call('GEOADD', KEYS[base + STATUS[status] * 5], lon, lat, TAG[vehicle] .. id)
  redis.call('GEOADD', KEYS[base + STATUS[status] * 5 + VEHICLE[vehicle]], lon, lat, id)
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

if prev then
  if prev_city ~= city then
    unindex(19, prev_status, prev_vehicle, id)
    redis.call('ZREM', KEYS[18], id)
  elseif prev_status ~= status or prev_vehicle ~= vehicle then
    unindex(3, prev_status, prev_vehicle, id)
  end
end
index(3, status, vehicle, id, ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], recorded, id)
local state = table.concat({city, ARGV[5], ARGV[4], ARGV[3], status, vehicle, ARGV[8], ARGV[9], ARGV[10]}, '|')
redis.call('HSET', KEYS[1], id, state)
return {'ok', state, now}
