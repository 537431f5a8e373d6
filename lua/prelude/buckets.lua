-- prelude/buckets.lua, joined before the scripts that keep the liveness buckets (see
-- src/store/scripts.rs). A city's liveness bucket `...:seen:<bucket>` holds driver_id ->
-- recorded_ms; the city's bucket index holds <bucket> -> a lower bound of the bucket's oldest
-- recorded_ms.
-- Defines:
--   bucket_name(key)              the bucket's member in the index (the key's last segment)
--   refresh_bucket(index, key)    set the bucket's index entry to the exact time of its oldest
--                                 driver, or remove the entry when the bucket is empty
local function bucket_name(key)
  return string.match(key, ':([^:]*)$')
end

local function refresh_bucket(index, key)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] then
    redis.call('ZADD', index, oldest[2], bucket_name(key))
  else
    redis.call('ZREM', index, bucket_name(key))
  end
end
