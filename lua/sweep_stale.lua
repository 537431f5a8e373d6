-- sweep_stale.lua: keep a city's liveness buckets exact. For each bucket passed, in order:
-- drop its drivers whose last position is older than the TTL from the city's indexes (at most
-- ARGV[2] drivers per call: bounded work), then set the bucket's entry in the bucket index to
-- the exact time of its oldest driver (none when empty). Positions only keep that entry a lower
-- bound; this raises it before search would read a live bucket as stale. Staleness is decided
-- here from Redis' clock, so a bucket passed needlessly is only re-read. Swept drivers' state
-- stays readable (GET shows it as not fresh); the next position re-indexes them.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see set_position.lua)
-- KEYS[2]      liveness bucket index of the city: bucket -> lower bound of its oldest time
-- KEYS[3]      driver score sorted set of the city
-- KEYS[4..6]   GEO sets of the city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- KEYS[7..]    liveness buckets of the city (driver_id -> recorded_ms), `...:seen:<bucket>`
-- ARGV[1] driver TTL, ms   ARGV[2] most drivers to drop in this call
-- Returns {drivers dropped, buckets done}: the buckets done are the first ones passed; the
-- rest (the driver limit was reached) are for another call.
local STATUS = {available = 0, busy = 1, offline = 2}
local TAG = {bike = 'b:', scooter = 's:', car = 'c:', van = 'v:'}
-- Packed state codes (see set_position.lua): status a|b|o, vehicle b|s|c|v.
local STATUS_OF = {a = 'available', b = 'busy', o = 'offline'}
local VEHICLE_OF = {b = 'bike', s = 'scooter', c = 'car', v = 'van'}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local left = tonumber(ARGV[2])
local swept, done = 0, 0
for k = 7, #KEYS do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', '(' .. cutoff, 'LIMIT', 0, left + 1)
  local finished = #ids <= left
  if not finished then
    ids[#ids] = nil
  end
  for _, id in ipairs(ids) do
    local state = redis.call('HGET', KEYS[1], id)
    local status, vehicle
    if state then
      local sc, vc = string.match(state, '^[^|]*|[^|]*|[^|]*|(%a)|(%a)|')
      status, vehicle = STATUS_OF[sc], VEHICLE_OF[vc]
    end
    if status and STATUS[status] and TAG[vehicle] then
      redis.call('ZREM', KEYS[4 + STATUS[status]], TAG[vehicle] .. id)
    else
      for s = 4, 6 do
        redis.call('ZREM', KEYS[s], 'b:' .. id, 's:' .. id, 'c:' .. id, 'v:' .. id)
      end
    end
  end
  if #ids > 0 then
    redis.call('ZREM', KEYS[k], unpack(ids))
    swept = swept + #ids
    left = left - #ids
  end
  if not finished then
    break
  end
  local oldest = redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
  local bucket = string.match(KEYS[k], ':([^:]*)$')
  if oldest[2] then
    redis.call('ZADD', KEYS[2], oldest[2], bucket)
  else
    redis.call('ZREM', KEYS[2], bucket)
  end
  done = done + 1
  if left <= 0 then
    break
  end
end
return {swept, done}
