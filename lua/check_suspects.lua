-- check_suspects.lua: which of the drivers a nearby search read are fresh, by Redis' clock;
-- the stale among them (at most ARGV[2]) are dropped from the city's indexes in the same step,
-- as the sweeper would drop them: out of their status' GEO set and their liveness bucket. A
-- search among a stale majority thus clears the stale members it had to read, where searches
-- happen, instead of reading them again until the sweeper reaches them. Their state stays
-- readable (GET shows it as not fresh); the next position re-indexes them. A driver whose
-- state is missing or unreadable is reported not fresh and left to the sweeper.
--
-- Bounded work: one HMGET of the drivers' packed states, then two ZREM per dropped driver
-- (about 14 µs of Redis each at 1M drivers), so ARGV[2] bounds the call's length.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see prelude/codes.lua)
-- KEYS[2..4]   GEO sets of the city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- KEYS[5..]    liveness buckets of the drivers passed (driver_id -> recorded_ms), each once
-- ARGV[1] driver TTL, ms   ARGV[2] most stale drivers to drop in this call
-- ARGV[3..] pairs: a driver id, then the index in KEYS of its liveness bucket
-- Returns one flag per driver passed, in order (1 fresh, 0 not), then how many were dropped.
-- Prelude: clock (now_ms), codes (STATUS, TAG, unpack_state).
local cutoff = now_ms() - tonumber(ARGV[1])
local left = tonumber(ARGV[2])
local ids = {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then
  return {0}
end
local states = redis.call('HMGET', KEYS[1], unpack(ids))
local fresh = {}
for i, id in ipairs(ids) do
  fresh[i] = 0
  local state = states[i]
  -- The last-seen time leads the packed state: read only it, and unpack the rest only for a
  -- driver to drop (most suspects of a search among a stale majority are read, few dropped).
  local bar = state and string.find(state, '|', 1, true)
  local rec = bar and tonumber(string.sub(state, 1, bar - 1))
  if rec and rec >= cutoff then
    fresh[i] = 1
  elseif rec and left > 0 then
    local _, _, _, status, vehicle = unpack_state(state)
    if status and vehicle then
      redis.call('ZREM', KEYS[2 + STATUS[status]], TAG[vehicle] .. id)
      redis.call('ZREM', KEYS[tonumber(ARGV[2 + 2 * i])], id)
      left = left - 1
    end
  end
end
fresh[#ids + 1] = tonumber(ARGV[2]) - left
return fresh
