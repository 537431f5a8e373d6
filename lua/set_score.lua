-- set_score.lua: set, raise (ZADD GT) or increment (ZINCRBY) a driver's score in the score
-- sorted set of the city the driver is in.
--
-- KEYS[1] drivers hash of the city: driver_id -> packed state (see prelude/codes.lua)
-- KEYS[2] driver score sorted set of the city the caller believes the driver is in
-- ARGV[1] driver_id   ARGV[2] 'set' | 'gt' | 'incr'   ARGV[3] the number
-- Returns {'ok', score, changed ('1'|'0')} | {'missing'} (nothing written: the driver has no state
-- in that city)
local id, mode = ARGV[1], ARGV[2]
local state = redis.call('HGET', KEYS[1], id)
if not state then
  return {'missing'}
end
if mode == 'incr' then
  local score = redis.call('ZINCRBY', KEYS[2], ARGV[3], id)
  return {'ok', score, '1'}
end
local changed
if mode == 'gt' then
  changed = redis.call('ZADD', KEYS[2], 'GT', 'CH', ARGV[3], id)
else
  changed = redis.call('ZADD', KEYS[2], 'CH', ARGV[3], id)
end
return {'ok', redis.call('ZSCORE', KEYS[2], id), tostring(changed)}
