-- set_position.lua: store driver positions atomically, one or many drivers of one city per call.
-- Every key is in the city's hash slot (Cluster-safe). For each position: rejects one older
-- than the stored position (stale) or too far in the future; otherwise moves the driver to the
-- GEO sets of its (status, vehicle type) in the city, stores its state and last-seen time.
-- A driver unknown to this city is only created with mode 'create' (the caller first looked
-- it up in the driver -> city directory); a driver leaving for another city is removed from
-- this city with mode 'leave', then created there by a second call.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state
--              "city|recorded_ms|lat|lon|status|vehicle|accuracy_m|heading_deg|speed_mps"
-- KEYS[2]      last-seen sorted set of the city (score = recorded_ms)
-- KEYS[3]      driver score sorted set of the city (leaderboard)
-- KEYS[4..18]  GEO sets of the city, five per status (available, busy, offline): first the
--              status' set of every vehicle type (members tagged 'b:id', 's:id', 'c:id', 'v:id' so
--              a search of all vehicles learns each driver's type), then one set per vehicle type
--              (bike, scooter, car, van; plain ids)
-- ARGV[1] allowed clock skew into the future, ms
-- ARGV[2] mode: ''       a driver absent from this city answers 'unknown' (nothing written)
--               'create' a driver absent from this city is created here
--               'leave'  the position lies in another city: a driver that is not busy is
--                        removed from every index of this city (its state and score too) and
--                        answers 'left'; a busy driver stays in this city (it belongs to its
--                        order's city until the order ends) and the position is stored here
-- ARGV[3] this city
-- then 9 ARGV per position, from ARGV[4]:
--   driver_id, lon, lat, recorded_ms,
--   requested status ('' keeps it; new drivers start 'available'; or 'available' | 'offline'),
--   vehicle type ('' keeps it; new drivers are 'car'; or bike|scooter|car|van),
--   accuracy_m, heading_deg, speed_mps ('' when absent)
-- Returns 3 entries per position, in order:
--   'ok', packed_state, now_ms
--   'stale', stored_recorded_ms, now_ms     nothing written for it
--   'future', now_ms, ''                    nothing written for it
--   'unknown', '', ''                       nothing written: the driver has no state in this city
--   'left', packed_state, score             (mode 'leave') removed from this city; the previous
--                                           state and score ('' when none) to carry over
local STATUS = {available = 0, busy = 1, offline = 2}
local VEHICLE = {bike = 1, scooter = 2, car = 3, van = 4}
local TAG = {bike = 'b:', scooter = 's:', car = 'c:', van = 'v:'}
local function unindex(status, vehicle, id)
  redis.call('ZREM', KEYS[4 + STATUS[status] * 5], TAG[vehicle] .. id)
  redis.call('ZREM', KEYS[4 + STATUS[status] * 5 + VEHICLE[vehicle]], id)
end
local function index(status, vehicle, id, lon, lat)
  redis.call('GEOADD', KEYS[4 + STATUS[status] * 5], lon, lat, TAG[vehicle] .. id)
  redis.call('GEOADD', KEYS[4 + STATUS[status] * 5 + VEHICLE[vehicle]], lon, lat, id)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local skew, mode, city = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}

local function store(a)
  local id, lon, lat = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local recorded = tonumber(ARGV[a + 3])
  if recorded > now + skew then
    return 'future', now, ''
  end
  local prev = redis.call('HGET', KEYS[1], id)
  local status, vehicle = 'available', 'car'
  local prev_status, prev_vehicle
  if prev then
    local _, pr, _, _, ps, pv = string.match(prev, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
    prev_status, prev_vehicle = ps, pv
    if recorded < tonumber(pr) then
      return 'stale', pr, now
    end
    status, vehicle = prev_status, prev_vehicle
  elseif mode ~= 'create' then
    return 'unknown', '', ''
  end
  if mode == 'leave' and status ~= 'busy' then
    unindex(prev_status, prev_vehicle, id)
    redis.call('ZREM', KEYS[2], id)
    local score = redis.call('ZSCORE', KEYS[3], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[1], id)
    return 'left', prev, score or ''
  end
  -- Only dispatch moves a driver into or out of 'busy'; a phone cannot override it.
  if ARGV[a + 4] ~= '' and status ~= 'busy' then
    status = ARGV[a + 4]
  end
  if ARGV[a + 5] ~= '' then
    vehicle = ARGV[a + 5]
  end
  if prev and (prev_status ~= status or prev_vehicle ~= vehicle) then
    unindex(prev_status, prev_vehicle, id)
  end
  index(status, vehicle, id, lon, lat)
  redis.call('ZADD', KEYS[2], recorded, id)
  local state = table.concat({city, ARGV[a + 3], lat, lon, status, vehicle, ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]}, '|')
  redis.call('HSET', KEYS[1], id, state)
  return 'ok', state, now
end

for a = 4, #ARGV, 9 do
  local code, x, y = store(a)
  out[#out + 1] = code
  out[#out + 1] = tostring(x)
  out[#out + 1] = tostring(y)
end
return out
