-- sweep_stale.lua: keep a city's liveness buckets exact, within a budget of Redis time and a
-- share of the Redis thread. For each bucket passed, in order: drop its drivers whose last
-- position is older than the TTL from the city's indexes, then set the bucket's entry in the
-- bucket index to the exact time of its oldest driver (none when empty). Positions only keep
-- that entry a lower bound; this raises it before search would read a live bucket as stale.
-- Staleness is decided here from Redis' clock, so a bucket passed needlessly is only re-read.
-- Swept drivers' state stays readable (GET shows it as not fresh); the next position
-- re-indexes them.
--
-- Bounded work: drivers are taken in chunks of at most CHUNK (one ZRANGEBYSCORE, one HMGET of
-- their states, one ZREM per GEO set and one on the bucket per chunk), and the call stops after
-- the chunk during which its elapsed time (Redis' TIME) reached ARGV[3] µs, or when ARGV[2]
-- drivers are dropped. A swept driver costs Redis about 14 µs at 1M drivers (removal from big
-- sorted sets), so one call overshoots the budget by at most one chunk's time, ~0.5 ms.
--
-- Paced by a share: KEYS[7] holds the earliest time (epoch µs) the city's next sweep call may
-- work. A call that finds it in the future does nothing and answers how long to wait; a call
-- that worked `spent` µs sets it to end + spent × (1 − share) / share, so that all service
-- instances together spend at most the share ARGV[4] (parts per million) of the Redis thread on
-- sweeping, whatever their number.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see prelude/codes.lua)
-- KEYS[2]      liveness bucket index of the city: bucket -> lower bound of its oldest time
-- KEYS[3]      driver score sorted set of the city (unused; part of the city's key set)
-- KEYS[4..6]   GEO sets of the city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- KEYS[7]      sweep pace of the city: string, epoch µs before which no call works
-- KEYS[8..]    liveness buckets of the city (driver_id -> recorded_ms), `...:seen:<bucket>`
-- ARGV[1] driver TTL, ms   ARGV[2] most drivers to drop in this call
-- ARGV[3] time budget of this call, µs   ARGV[4] share of the Redis thread, parts per million
-- Returns {drivers dropped, buckets done, µs spent, µs to wait before the next call}: the
-- buckets done are the first ones passed; the rest (a limit was reached) are for another call.
-- Prelude: clock (now_us), codes (STATUS, TAG, unpack_state, all_tags), buckets
-- (refresh_bucket).
local CHUNK = 32
local start = now_us()
local pace = tonumber(redis.call('GET', KEYS[7]) or '0') or 0
if pace > start then
  return {0, 0, 0, pace - start}
end
local cutoff = math.floor(start / 1000) - tonumber(ARGV[1])
local left = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local share = tonumber(ARGV[4]) / 1000000
local swept, done = 0, 0
local now = start
for k = 8, #KEYS do
  local finished = false
  while left > 0 and now - start < budget do
    local n = math.min(left, CHUNK)
    local ids = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', '(' .. cutoff, 'LIMIT', 0, n)
    finished = #ids < n
    if #ids > 0 then
      local states = redis.call('HMGET', KEYS[1], unpack(ids))
      local members = {{}, {}, {}}
      for i, id in ipairs(ids) do
        local status, vehicle
        if states[i] then
          status, vehicle = select(4, unpack_state(states[i]))
        end
        if status and vehicle then
          local m = members[1 + STATUS[status]]
          m[#m + 1] = TAG[vehicle] .. id
        else
          for s = 1, 3 do
            local m = members[s]
            for _, tag in ipairs({all_tags(id)}) do
              m[#m + 1] = tag
            end
          end
        end
      end
      for s = 1, 3 do
        if #members[s] > 0 then
          redis.call('ZREM', KEYS[3 + s], unpack(members[s]))
        end
      end
      redis.call('ZREM', KEYS[k], unpack(ids))
      swept = swept + #ids
      left = left - #ids
    end
    now = now_us()
    if finished then
      break
    end
  end
  if not finished then
    break
  end
  refresh_bucket(KEYS[2], KEYS[k])
  done = done + 1
  now = now_us()
  if left <= 0 or now - start >= budget then
    break
  end
end
local spent = now - start
local wait = math.floor(spent * (1 - share) / share)
if wait > 0 then
  redis.call('SET', KEYS[7], now + wait, 'PX', math.floor(wait / 1000) + 1000)
end
return {swept, done, spent, wait}
