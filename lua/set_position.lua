-- set_position.lua: store driver positions atomically, one or many drivers of one city per call.
-- For each position: rejects one older than the stored position (stale) or too far in the
-- future; otherwise moves the driver to the GEO sets of its (status, vehicle type) in the city,
-- stores its state and its last-seen time. A driver changing city leaves every index of the
-- previous city (only when the caller passed that city's keys; else the item answers 'moved').
--
-- KEYS[1]      drivers hash (global): driver_id -> packed state
--              "city|recorded_ms|lat|lon|status|vehicle|accuracy_m|heading_deg|speed_mps"
-- KEYS[2]      last-seen sorted set of the city (score = recorded_ms)
-- KEYS[3]      driver score sorted set of the city (leaderboard)
-- KEYS[4..18]  GEO sets of the city, five per status (available, busy, offline): first the
--              status' set of every vehicle type (members tagged 'b:id', 's:id', 'c:id', 'v:id' so
--              a search of all vehicles learns each driver's type), then one set per vehicle type
--              (bike, scooter, car, van; plain ids)
-- KEYS[19]     last-seen sorted set of the previous city     (only when ARGV[2] ~= '')
-- KEYS[20]     driver score sorted set of the previous city  (only when ARGV[2] ~= ''); a
--              driver changing city takes its score along
-- KEYS[21..35] GEO sets of the previous city, same order     (only when ARGV[2] ~= '')
-- ARGV[1] allowed clock skew into the future, ms
-- ARGV[2] previous city whose keys are passed as KEYS[19..35], or ''
-- ARGV[3] the city of every position in this call
-- then 9 ARGV per position, from ARGV[4]:
--   driver_id, lon, lat, recorded_ms,
--   requested status ('' keeps it; new drivers start 'available'; or 'available' | 'offline'),
--   vehicle type ('' keeps it; new drivers are 'car'; or bike|scooter|car|van),
--   accuracy_m, heading_deg, speed_mps ('' when absent)
-- Returns 3 entries per position, in order:
--   'ok', packed_state, now_ms
--   'stale', stored_recorded_ms, now_ms     nothing written for it
--   'future', now_ms, ''                    nothing written for it
--   'moved', previous_city, ''              nothing written for it: call again with that city's keys
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
local skew, passed_prev, city = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}

local function store(a)
  local id, lon, lat = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local recorded = tonumber(ARGV[a + 3])
  if recorded > now + skew then
    return 'future', now, ''
  end
  local prev = redis.call('HGET', KEYS[1], id)
  local status, vehicle = 'available', 'car'
  local prev_city, prev_status, prev_vehicle
  if prev then
    local pc, pr, _, _, ps, pv = string.match(prev, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
    prev_city, prev_status, prev_vehicle = pc, ps, pv
    if prev_city ~= city and prev_city ~= passed_prev then
      return 'moved', prev_city, ''
    end
    if recorded < tonumber(pr) then
      return 'stale', pr, now
    end
    status, vehicle = prev_status, prev_vehicle
  end
  -- Only dispatch moves a driver into or out of 'busy'; a phone cannot override it.
  if ARGV[a + 4] ~= '' and status ~= 'busy' then
    status = ARGV[a + 4]
  end
  if ARGV[a + 5] ~= '' then
    vehicle = ARGV[a + 5]
  end
  if prev then
    if prev_city ~= city then
      unindex(21, prev_status, prev_vehicle, id)
      redis.call('ZREM', KEYS[19], id)
      local score = redis.call('ZSCORE', KEYS[20], id)
      if score then
        redis.call('ZREM', KEYS[20], id)
        redis.call('ZADD', KEYS[3], score, id)
      end
    elseif prev_status ~= status or prev_vehicle ~= vehicle then
      unindex(4, prev_status, prev_vehicle, id)
    end
  end
  index(4, status, vehicle, id, lon, lat)
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
