-- rank_candidates.lua: rank candidate drivers by a composite of distance and driver score with
-- a sorted set: composite = score_weight * score - distance_weight * distance_km (higher is
-- better; a driver without a score counts 0). The temporary sorted set is deleted before the
-- script returns, so it never outlives the call.
--
-- KEYS[1] driver score sorted set of the city
-- KEYS[2] temporary sorted set in the same city slot (unique per call)
-- ARGV[1] distance weight per km   ARGV[2] score weight   ARGV[3] how many to return
-- ARGV[4..] pairs: driver_id, distance_m
-- Returns flat triples, best first: driver_id, composite, score
local wd, ws, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = {}
for a = 4, #ARGV, 2 do
  ids[#ids + 1] = ARGV[a]
end
if #ids == 0 then
  return {}
end
local scores = redis.call('ZMSCORE', KEYS[1], unpack(ids))
local by_id = {}
for i = 1, #ids do
  local score = tonumber(scores[i]) or 0
  local distance_km = tonumber(ARGV[3 + 2 * i]) / 1000
  by_id[ids[i]] = score
  redis.call('ZADD', KEYS[2], ws * score - wd * distance_km, ids[i])
end
local ranked = redis.call('ZREVRANGE', KEYS[2], 0, n - 1, 'WITHSCORES')
redis.call('DEL', KEYS[2])
local out = {}
for i = 1, #ranked, 2 do
  out[#out + 1] = ranked[i]
  out[#out + 1] = ranked[i + 1]
  out[#out + 1] = tostring(by_id[ranked[i]])
end
return out
