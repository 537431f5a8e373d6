-- set_position.lua: store driver positions atomically, one or many drivers of one city per call.
-- Every key is in the city's hash slot (Cluster-safe). For each position: rejects one older
-- than the stored position (stale) or too far in the future; otherwise moves the driver to the
-- GEO set of its status in the city, stores its state and last-seen time.
-- A driver unknown to this city is only created with mode 'create' (the caller first looked
-- it up in the driver -> city directory); a driver leaving for another city is removed from
-- this city with mode 'leave', then created there by a second call.
--
-- KEYS[1]     drivers hash of the city: driver_id -> packed state (see prelude/codes.lua;
--             the city is the hash's). Short, so that the entry fits a small allocation.
-- KEYS[2]     liveness bucket index of the city: bucket -> a lower bound of the recorded_ms of
--             its oldest driver (exact after a sweep of the bucket)
-- KEYS[3]     driver score sorted set of the city (leaderboard)
-- KEYS[4..6]  GEO sets of the city, one per status (available, busy, offline); members are
--             tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id': bike, scooter, car,
--             van), so a search learns each driver's type and filters by it
-- KEYS[7]     arrival tracking hash of the city: driver_id -> the target of the driver's open
--             order, "order|fence|phase|lat|lon|since_ms|arrived" (phase 'p' pickup, 'd'
--             drop-off; since_ms the recorded_ms at which the driver came within the radius,
--             '' while outside; arrived '1' once this visit's arrival was emitted), written by
--             order_transition.lua (accept, pickup; removed when the order lets go of the driver)
-- KEYS[8]     arrival times hash of the city: order_id -> "pickup_ms|dropoff_ms" ('' when not
--             arrived), until order_transition.lua copies them into the order hash
-- KEYS[9]     events stream of the city
-- KEYS[9 + i] the liveness bucket of the i-th position's driver (driver_id -> recorded_ms;
--             `...:seen:<bucket>`, the index member being <bucket>)
-- ARGV[1] allowed clock skew into the future, ms
-- ARGV[2] mode: ''       a driver absent from this city answers 'unknown' (nothing written)
--               'create' a driver absent from this city is created here
--               'leave'  the position lies in another city: a driver that is not busy is
--                        removed from every index of this city (its state and score too) and
--                        answers 'left'; a busy driver stays in this city (it belongs to its
--                        order's city until the order ends) and the position is stored here
-- ARGV[3] arrival radius, m ('' turns arrival detection off)   ARGV[4] arrival dwell, ms
-- ARGV[5] events stream MAXLEN (approximate)   ARGV[6] city ops channel
-- ARGV[7] per-driver channel prefix   ARGV[8] the city (named in published events)
-- then 9 ARGV per position, from ARGV[9]:
--   driver_id, lon, lat, recorded_ms,
--   requested status ('' keeps it; new drivers start 'available'; or 'available' | 'offline'),
--   vehicle type ('' keeps it; new drivers are 'car'; or bike|scooter|car|van),
--   accuracy_m, heading_deg, speed_mps ('' when absent)
-- Returns 3 entries per position, in order:
--   'ok', packed_state, now_ms
--   'stale', stored_recorded_ms, now_ms     nothing written for it
--   'future', now_ms, ''                    nothing written for it
--   'unknown', '', ''                       nothing written: the driver has no state in this city
--   'left', packed_state, score             (mode 'leave') removed from this city; the previous
--                                           state and score ('' when none) to carry over
--
-- Positions are decided in order (a driver twice in one call: the second sees the first), then
-- written with one command per key (one HMGET first, then at most one ZREM and one GEOADD per
-- GEO set, one HSET, and per liveness bucket one ZADD): per position that is a few member
-- updates, not five commands.
--
-- Arrivals. A position of a busy driver (status read from the stored state, so a driver
-- without an open order costs nothing more) is checked against its tracking entry (one HMGET
-- for the call's busy drivers): within the radius it starts a visit (since_ms), a visit lasting
-- the dwell (by the positions' recorded_ms) emits 'driver.arrived_pickup' or
-- 'driver.arrived_dropoff' once and records the order's first arrival time (the visit's start);
-- the visit ends only beyond 1.5 x the radius (hysteresis: GPS jitter at the edge does not end
-- it), which emits 'driver.left_pickup' after an arrival at the pickup. Events are appended to
-- the city's stream and published like order events.
-- Prelude: clock (now_ms), codes (STATUS, TAG, unpack_state, pack_state), buckets
-- (bucket_name, refresh_bucket).
local now = now_ms()
local skew, mode = tonumber(ARGV[1]), ARGV[2]
local radius = tonumber(ARGV[3])
local FIRST = 9

local ids = {}
for a = FIRST, #ARGV, 9 do
  ids[#ids + 1] = ARGV[a]
end
if #ids == 0 then
  return {}
end
local stored = redis.call('HMGET', KEYS[1], unpack(ids))

-- cur[id]: the driver as decided so far in this call (false: absent from this city);
-- first[id]: the driver as stored before this call (false: none), whose status and vehicle
-- name the GEO entry to remove when they change. A decision replaces cur[id], never edits it.
local cur, first, touched, order = {}, {}, {}, {}
local out = {}
-- Positions of busy drivers to check for arrivals, in call order.
local track = {}

local function decide(i, a)
  local id = ids[i]
  local c = cur[id]
  if c == nil then
    local prev = stored[i]
    if prev then
      local pr, _, _, ps, pv = unpack_state(prev)
      c = {status = ps, vehicle = pv, recorded = tonumber(pr), rs = pr, state = prev}
    else
      c = false
    end
    cur[id], first[id] = c, c
  end
  local recorded = tonumber(ARGV[a + 3])
  if recorded > now + skew then
    return 'future', now, ''
  end
  if c then
    if recorded < c.recorded then
      return 'stale', c.rs, now
    end
  elseif mode ~= 'create' then
    return 'unknown', '', ''
  end
  if not touched[id] then
    touched[id] = true
    order[#order + 1] = id
  end
  if mode == 'leave' and c.status ~= 'busy' then
    local score = redis.call('ZSCORE', KEYS[3], id)
    cur[id] = false
    return 'left', c.state, score or ''
  end
  local status, vehicle = 'available', 'car'
  if c then
    status, vehicle = c.status, c.vehicle
  end
  -- Only dispatch moves a driver into or out of 'busy'; a phone cannot override it.
  if ARGV[a + 4] ~= '' and status ~= 'busy' then
    status = ARGV[a + 4]
  end
  if ARGV[a + 5] ~= '' then
    vehicle = ARGV[a + 5]
  end
  local lon, lat = ARGV[a + 1], ARGV[a + 2]
  local state = pack_state(ARGV[a + 3], lat, lon, status, vehicle, ARGV[a + 6], ARGV[a + 7], ARGV[a + 8])
  cur[id] = {status = status, vehicle = vehicle, recorded = recorded, rs = ARGV[a + 3], state = state, lat = lat, lon = lon}
  if radius and status == 'busy' then
    track[#track + 1] = {id = id, lat = tonumber(lat), lon = tonumber(lon), at = recorded}
  end
  return 'ok', state, now
end

for i = 1, #ids do
  local code, x, y = decide(i, FIRST + (i - 1) * 9)
  out[#out + 1] = code
  out[#out + 1] = tostring(x)
  out[#out + 1] = tostring(y)
end

-- Arrivals of busy drivers (see the header).
if #track > 0 then
  local dwell, outer = tonumber(ARGV[4]), radius * 1.5
  local names, entries, seen = {}, {}, {}
  for _, t in ipairs(track) do
    if not seen[t.id] then
      seen[t.id] = true
      names[#names + 1] = t.id
    end
  end
  local got = redis.call('HMGET', KEYS[7], unpack(names))
  for j, id in ipairs(names) do
    local e = got[j]
    if e then
      local o, f, ph, la, lo, since, arrived = string.match(e, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
      if o then
        entries[id] = {order = o, fence = f, phase = ph, la = la, lo = lo, lat = tonumber(la),
          lon = tonumber(lo), since = tonumber(since), arrived = arrived == '1', changed = false}
      end
    end
  end
  -- Great-circle distance in metres, on the sphere Redis' GEO commands use.
  local function distance(lat1, lon1, lat2, lon2)
    local r = math.pi / 180
    local u = math.sin((lat2 - lat1) * r / 2)
    local v = math.sin((lon2 - lon1) * r / 2)
    local a = u * u + math.cos(lat1 * r) * math.cos(lat2 * r) * v * v
    return 2 * 6372797.560856 * math.asin(math.sqrt(a))
  end
  local function emit(kind, id, e)
    local state = e.phase == 'p' and 'accepted' or 'picked_up'
    local sid = redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[5], '*', 'type', kind,
      'order', e.order, 'driver', id, 'state', state, 'fence', e.fence, 'at', tostring(now))
    local msg = cjson.encode({id = sid, type = kind, order_id = e.order, driver_id = id,
      state = state, fencing_token = tonumber(e.fence), at_ms = now, city = ARGV[8]})
    redis.call('PUBLISH', ARGV[6], msg)
    redis.call('PUBLISH', ARGV[7] .. id, msg)
  end
  for _, t in ipairs(track) do
    local e = entries[t.id]
    if e and e.lat then
      local d = distance(t.lat, t.lon, e.lat, e.lon)
      if not e.since then
        if d <= radius then
          e.since, e.changed = t.at, true
        end
      elseif d > outer then
        if e.arrived and e.phase == 'p' then
          emit('driver.left_pickup', t.id, e)
        end
        e.since, e.arrived, e.changed = nil, false, true
      end
      if e.since and not e.arrived and t.at - e.since >= dwell then
        e.arrived, e.changed = true, true
        emit(e.phase == 'p' and 'driver.arrived_pickup' or 'driver.arrived_dropoff', t.id, e)
        local times = redis.call('HGET', KEYS[8], e.order) or '|'
        local p, dd = string.match(times, '^([^|]*)|([^|]*)$')
        if e.phase == 'p' and p == '' then
          p = string.format('%d', e.since)
        elseif e.phase == 'd' and dd == '' then
          dd = string.format('%d', e.since)
        end
        redis.call('HSET', KEYS[8], e.order, p .. '|' .. dd)
      end
    end
  end
  local writes = {}
  for _, id in ipairs(names) do
    local e = entries[id]
    if e and e.changed then
      writes[#writes + 1] = id
      writes[#writes + 1] = table.concat({e.order, e.fence, e.phase, e.la, e.lo,
        e.since and string.format('%d', e.since) or '', e.arrived and '1' or '0'}, '|')
    end
  end
  if #writes > 0 then
    redis.call('HSET', KEYS[7], unpack(writes))
  end
end

-- Write each touched driver's final state.
local bucket_of = {}
for i = 1, #ids do
  bucket_of[ids[i]] = KEYS[9 + i]
end
local adds, rems = {{}, {}, {}}, {{}, {}, {}}
local hash, gone = {}, {}
local bucket_adds, bucket_rems, buckets = {}, {}, {}
local function bucket_list(lists, id)
  local k = bucket_of[id]
  if not bucket_adds[k] and not bucket_rems[k] then
    buckets[#buckets + 1] = k
  end
  if not lists[k] then
    lists[k] = {}
  end
  return lists[k]
end
for _, id in ipairs(order) do
  local f, c = first[id], cur[id]
  if f and (not c or f.status ~= c.status or f.vehicle ~= c.vehicle) then
    local r = rems[STATUS[f.status] + 1]
    r[#r + 1] = TAG[f.vehicle] .. id
  end
  if c then
    local g = adds[STATUS[c.status] + 1]
    g[#g + 1] = c.lon
    g[#g + 1] = c.lat
    g[#g + 1] = TAG[c.vehicle] .. id
    local s = bucket_list(bucket_adds, id)
    s[#s + 1] = c.rs
    s[#s + 1] = id
    hash[#hash + 1] = id
    hash[#hash + 1] = c.state
  else
    local s = bucket_list(bucket_rems, id)
    s[#s + 1] = id
    gone[#gone + 1] = id
  end
end
for s = 1, 3 do
  if #rems[s] > 0 then
    redis.call('ZREM', KEYS[3 + s], unpack(rems[s]))
  end
  if #adds[s] > 0 then
    redis.call('GEOADD', KEYS[3 + s], unpack(adds[s]))
  end
end
if #hash > 0 then
  redis.call('HSET', KEYS[1], unpack(hash))
end
if #gone > 0 then
  redis.call('ZREM', KEYS[3], unpack(gone))
  redis.call('HDEL', KEYS[1], unpack(gone))
end
-- Liveness buckets, then the bucket index. The index entry of a bucket is a lower bound of
-- its oldest time: a driver updated in place only moves forward in time, so the bound holds
-- without touching the index (the sweeper raises it to the exact time before search would
-- read it as stale). A driver added to a bucket (new, or back after a sweep) may lower the
-- bucket's oldest time: ZADD LT. A bucket a driver left (rare) gets its exact time again.
local born = {}
for _, k in ipairs(buckets) do
  local a = bucket_adds[k]
  if a and redis.call('ZADD', k, unpack(a)) > 0 then
    local low = tonumber(a[1])
    for j = 3, #a, 2 do
      low = math.min(low, tonumber(a[j]))
    end
    born[#born + 1] = low
    born[#born + 1] = bucket_name(k)
  end
  if bucket_rems[k] then
    redis.call('ZREM', k, unpack(bucket_rems[k]))
    refresh_bucket(KEYS[2], k)
  end
end
if #born > 0 then
  redis.call('ZADD', KEYS[2], 'LT', unpack(born))
end
return out
