-- sweep_stale.lua: keep a city's liveness buckets exact. For each bucket passed, in order:
-- drop its drivers whose last position is older than the TTL from the city's indexes (at most
-- ARGV[2] drivers per call: bounded work), then set the bucket's entry in the bucket index to
-- the exact time of its oldest driver (none when empty). Positions only keep that entry a lower
-- bound; this raises it before search would read a live bucket as stale. Staleness is decided
-- here from Redis' clock, so a bucket passed needlessly is only re-read. Swept drivers' state
-- stays readable (GET shows it as not fresh); the next position re-indexes them.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see prelude/codes.lua)
-- KEYS[2]      liveness bucket index of the city: bucket -> lower bound of its oldest time
-- KEYS[3]      driver score sorted set of the city
-- KEYS[4..6]   GEO sets of the city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- KEYS[7..]    liveness buckets of the city (driver_id -> recorded_ms), `...:seen:<bucket>`
-- ARGV[1] driver TTL, ms   ARGV[2] most drivers to drop in this call
-- Returns {drivers dropped, buckets done}: the buckets done are the first ones passed; the
-- rest (the driver limit was reached) are for another call.
-- Prelude: clock (now_ms), codes (STATUS, TAG, unpack_state, all_tags), buckets
-- (refresh_bucket).
local now = now_ms()
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
      status, vehicle = select(4, unpack_state(state))
    end
    if status and vehicle then
      redis.call('ZREM', KEYS[4 + STATUS[status]], TAG[vehicle] .. id)
    else
      for s = 4, 6 do
        redis.call('ZREM', KEYS[s], all_tags(id))
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
  refresh_bucket(KEYS[2], KEYS[k])
  done = done + 1
  if left <= 0 then
    break
  end
end
return {swept, done}
