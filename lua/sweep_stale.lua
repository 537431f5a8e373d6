-- sweep_stale.lua: drop drivers whose last position is older than the TTL from a city's
-- indexes, at most ARGV[2] of them per call (bounded work; call again while it returns ARGV[2]).
-- Their state stays readable (GET shows it as not fresh); the next position re-indexes them.
--
-- KEYS[1]      drivers hash of the city: driver_id -> packed state (see set_position.lua)
-- KEYS[2]      last-seen sorted set of the city
-- KEYS[3]      driver score sorted set of the city
-- KEYS[4..6]   GEO sets of the city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- ARGV[1] driver TTL, ms   ARGV[2] batch size
-- Returns the number of drivers swept.
local STATUS = {available = 0, busy = 1, offline = 2}
local TAG = {bike = 'b:', scooter = 's:', car = 'c:', van = 'v:'}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. cutoff, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local state = redis.call('HGET', KEYS[1], id)
  local status, vehicle
  if state then
    status, vehicle = string.match(state, '^[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|([^|]*)|')
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
  redis.call('ZREM', KEYS[2], unpack(ids))
end
return #ids
