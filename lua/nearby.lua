-- nearby.lua: the k nearest fresh drivers around a point, over one or more GEO sets, at a cost
-- that tracks k rather than the search radius.
--
-- A plain GEOSEARCH BYRADIUS r ... ASC COUNT k still visits every member within r before
-- sorting, so its cost grows with the drivers inside r. This script starts from the radius that
-- should hold about k drivers at the city's current density, and doubles it until it has k
-- fresh drivers or reaches the maximum radius. At every step the answer is exact: a result is
-- only returned when no closer fresh driver can exist (a set that filled its COUNT only
-- vouches for distances up to its last member; then COUNT is doubled instead of the radius).
--
-- KEYS[1]     last-seen sorted set of the city (score = recorded_ms): freshness filter
-- KEYS[2..n]  GEO sets to search (one per status and vehicle type asked for)
-- ARGV[1] lon   ARGV[2] lat   ARGV[3] 'radius' | 'box'
-- ARGV[4] max radius in metres ('radius') or box width in metres ('box')
-- ARGV[5] box height in metres ('box'; ignored for 'radius')
-- ARGV[6] k   ARGV[7] driver TTL in ms   ARGV[8] city area in square metres
-- Returns a flat array: id, distance_m, lon, lat, key index (2..n), ... nearest first.
local lon, lat, mode = ARGV[1], ARGV[2], ARGV[3]
local k = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fresh_after = now - tonumber(ARGV[7])

local total = 0
for i = 2, #KEYS do
  total = total + redis.call('ZCARD', KEYS[i])
end
if total == 0 then
  return {}
end

local max_r, r
if mode == 'radius' then
  max_r = tonumber(ARGV[4])
  local density = total / tonumber(ARGV[8])
  r = math.sqrt(k / (math.pi * density)) * 1.5
  if r < 50 then r = 50 end
  if r > max_r then r = max_r end
end

local count = k * 2
for _ = 1, 24 do
  local found = {}
  local cutoff = math.huge
  for i = 2, #KEYS do
    local res
    if mode == 'radius' then
      res = redis.call('GEOSEARCH', KEYS[i], 'FROMLONLAT', lon, lat, 'BYRADIUS', r, 'm',
        'ASC', 'COUNT', count, 'WITHDIST', 'WITHCOORD')
    else
      res = redis.call('GEOSEARCH', KEYS[i], 'FROMLONLAT', lon, lat, 'BYBOX', ARGV[4], ARGV[5], 'm',
        'ASC', 'COUNT', count, 'WITHDIST', 'WITHCOORD')
    end
    if #res == count then
      local last = tonumber(res[#res][2])
      if last < cutoff then cutoff = last end
    end
    for _, m in ipairs(res) do
      found[#found + 1] = {m[1], tonumber(m[2]), m[3][1], m[3][2], i}
    end
  end
  local fresh = {}
  if #found > 0 then
    local ids = {}
    for j, m in ipairs(found) do ids[j] = m[1] end
    local seen = redis.call('ZMSCORE', KEYS[1], unpack(ids))
    for j, m in ipairs(found) do
      if seen[j] and tonumber(seen[j]) >= fresh_after and m[2] <= cutoff then
        fresh[#fresh + 1] = m
      end
    end
  end
  table.sort(fresh, function(a, b)
    if a[2] == b[2] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local saturated = cutoff < math.huge
  local complete = (not saturated) and (mode == 'box' or r >= max_r)
  if #fresh >= k or complete then
    local out = {}
    for j = 1, math.min(k, #fresh) do
      local m = fresh[j]
      out[#out + 1] = m[1]
      out[#out + 1] = string.format('%.4f', m[2])
      out[#out + 1] = m[3]
      out[#out + 1] = m[4]
      out[#out + 1] = tostring(m[5])
    end
    return out
  end
  if saturated then
    count = count * 2
  else
    r = math.min(r * 2, max_r)
  end
end
return redis.error_reply('nearby: no answer after 24 widenings')
