-- claim_offer.lua: rank an order's nearest candidates and offer the order to the best one still
-- eligible, under the order's lock. Ranking is the candidate ranking of GET /v1/candidates done
-- here with the city's score sorted set (ZMSCORE): composite = score_weight x score -
-- distance_weight x km, best first, ties to the driver id that sorts last (as ZREVRANGE).
-- Then it checks, in the same atomic step, that (a) this token still holds the order's lock,
-- (b) no later fencing number has touched the order, (c) the order is still pending, and (d) per
-- candidate in rank order: the driver is available, fresh, in the order's city, of the right
-- vehicle type, not excluded (it rejected or let an offer expire) and holds no order. Only then
-- it moves the driver from the available to the busy GEO sets, records the offer on the order
-- with the fencing number, arms the offer's expiry timer and appends an 'offered' event.
--
-- KEYS[1]      order hash
-- KEYS[2]      drivers hash of the city: driver_id -> packed state (see prelude/codes.lua)
-- KEYS[3]      assignments hash of the city: driver_id -> order_id (active orders)
-- KEYS[4]      the order's excluded-drivers set
-- KEYS[5]      timers sorted set of the city: order_id -> due ms (offer expiry, retries)
-- KEYS[6]      events stream of the city
-- KEYS[7]      dispatch queue stream of the city (unused here; same layout as order_transition)
-- KEYS[8]      the order's lock key
-- KEYS[9]      driver score sorted set of the city (the leaderboard)
-- KEYS[10..12] GEO sets of the city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- KEYS[13]     fencing counter of the city (unused here; same layout as order_transition)
-- KEYS[14]     match pool of the city (batched policy): the offered order leaves it
-- KEYS[15]     dead-letter stream of the city (unused here; same layout as order_transition)
-- KEYS[16]     soon-free drivers of the city (unused here; same layout as order_transition)
-- KEYS[17..18] arrival tracking and arrival times hashes of the city (unused here; same layout
--              as order_transition)
-- ARGV[1] lock token   ARGV[2] fencing number of this lease   ARGV[3] driver TTL ms
-- ARGV[4] offer TTL ms   ARGV[5] events stream MAXLEN (approximate)   ARGV[6] city ops channel
-- ARGV[7] per-driver channel prefix (channel = prefix .. driver_id)
-- ARGV[8] '1': keep the lock when no driver was found (the caller then records the attempt
--         under it); '0': release it. Any other outcome releases it.
-- ARGV[9] distance weight (points per km)   ARGV[10] score weight (points per score point)
-- ARGV[11] score of a driver without one (ranking_unscored_score)
-- then 2 ARGV per candidate (the nearest available drivers, any order): driver_id, distance_m
-- Returns one of:
--   {'offered', driver_id, distance_m, driver_score, composite, offer_expires_ms, now_ms}
--   {'none', now_ms}             no candidate was eligible; the order stays pending
--   {'lock_lost'}                this token no longer holds the lock: nothing written
--   {'stale_fence', stored}      a later fencing number already touched the order
--   {'not_pending', state}       cancelled or already offered meanwhile
--   {'missing'}                  no such order
-- Prelude: clock (now_ms), codes (STATUS, TAG, unpack_state, pack_state).
local now = now_ms()
local token, fence = ARGV[1], tonumber(ARGV[2])

local function finish(reply)
  local release = ARGV[8] ~= '1' or reply[1] ~= 'none'
  if release and redis.call('GET', KEYS[8]) == token then
    redis.call('DEL', KEYS[8])
  end
  return reply
end

if redis.call('GET', KEYS[8]) ~= token then
  return {'lock_lost'}
end
local o = redis.call('HMGET', KEYS[1], 'state', 'fence', 'city', 'vehicle', 'id')
if not o[1] then
  return finish({'missing'})
end
if tonumber(o[2]) >= fence then
  return finish({'stale_fence', o[2]})
end
if o[1] ~= 'pending' then
  return finish({'not_pending', o[1]})
end
local city, want_vehicle, order_id = o[3], o[4], o[5]
local ttl = tonumber(ARGV[3])

-- Rank: composites in micro-points, as the sorted-set ranking computes them.
local dw, sw, unscored = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local cands, ids = {}, {}
for a = 12, #ARGV, 2 do
  ids[#ids + 1] = ARGV[a]
end
if #ids == 0 then
  return finish({'none', tostring(now)})
end
local scores = redis.call('ZMSCORE', KEYS[9], unpack(ids))
for i, id in ipairs(ids) do
  local dist = tonumber(ARGV[11 + 2 * i])
  local score = tonumber(scores[i]) or unscored
  local micro = math.floor(-dw * dist * 1000 + 0.5) + score * sw * 1000000
  cands[i] = {id = id, dist = ARGV[11 + 2 * i], score = score, micro = micro}
end
table.sort(cands, function(x, y)
  if x.micro ~= y.micro then return x.micro > y.micro end
  return x.id > y.id
end)

for _, cand in ipairs(cands) do
  local id = cand.id
  local s = redis.call('HGET', KEYS[2], id)
  if s then
    local rec, lat, lon, status, vehicle, rest = unpack_state(s)
    if status == 'available' and now - tonumber(rec) < ttl
      and (want_vehicle == '' or want_vehicle == vehicle)
      and redis.call('SISMEMBER', KEYS[4], id) == 0
      and redis.call('HEXISTS', KEYS[3], id) == 0 then
      -- Move the driver out of the available index (it is indexed: it is fresh).
      redis.call('ZREM', KEYS[10 + STATUS.available], TAG[vehicle] .. id)
      redis.call('GEOADD', KEYS[10 + STATUS.busy], lon, lat, TAG[vehicle] .. id)
      redis.call('HSET', KEYS[2], id, pack_state(rec, lat, lon, 'busy', vehicle, rest))
      redis.call('HSET', KEYS[3], id, order_id)
      local expires = now + tonumber(ARGV[4])
      redis.call('HSET', KEYS[1], 'state', 'offered', 'driver', id, 'fence', fence,
        'expires', expires, 'dist', cand.dist, 'dscore', cand.score, 'comp', cand.micro / 1000000,
        'updated', now, 'answered_by', '')
      redis.call('ZADD', KEYS[5], expires, order_id)
      redis.call('ZREM', KEYS[14], order_id)
      local ev = {'type', 'offered', 'order', order_id, 'driver', id, 'state', 'offered',
        'fence', tostring(fence), 'at', tostring(now)}
      local sid = redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[5], '*', unpack(ev))
      local msg = cjson.encode({id = sid, type = 'offered', order_id = order_id, driver_id = id,
        state = 'offered', fencing_token = fence, at_ms = now, city = city,
        offer_expires_ms = expires})
      redis.call('PUBLISH', ARGV[6], msg)
      redis.call('PUBLISH', ARGV[7] .. id, msg)
      return finish({'offered', id, cand.dist, tostring(cand.score), tostring(cand.micro / 1000000),
        tostring(expires), tostring(now)})
    end
  end
end
return finish({'none', tostring(now)})
