-- rank_around.lua: a driver's rank and score on its city's leaderboard and the drivers ranked
-- up to ARGV[2] places above and below it (ZREVRANK + ZREVRANGE, read atomically).
--
-- KEYS[1] driver score sorted set of the city
-- ARGV[1] driver_id   ARGV[2] how many neighbours on each side
-- Returns {} when the driver has no score, else
--   {rank0, score, first_rank0, member1, score1, member2, score2, ...}  (0-based ranks, highest first)
local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
if not rank then
  return {}
end
local around = tonumber(ARGV[2])
local first = math.max(0, rank - around)
local out = {tostring(rank), redis.call('ZSCORE', KEYS[1], ARGV[1]), tostring(first)}
local range = redis.call('ZREVRANGE', KEYS[1], first, rank + around, 'WITHSCORES')
for i = 1, #range do
  out[#out + 1] = range[i]
end
return out
