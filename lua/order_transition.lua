-- order_transition.lua: the order state machine. Every change of an order after its offer
-- (and its creation) is one call of this script, which checks the current state (and, for a
-- driver's answer, the offer's driver and fencing number) before it writes anything, frees the
-- driver where the order lets go of it, and appends the event in the same atomic step.
--
--   pending --claim_offer.lua--> offered --accept--> accepted --pickup--> picked_up --deliver--> delivered
--   offered --reject | timer (offer expired)--> pending (driver excluded, order re-queued)
--   pending | offered | accepted | picked_up --cancel--> cancelled (frees the driver)
--   pending --attempt (no driver, attempts exhausted)--> failed
--   pending --dead_letter (its queue entry delivered too often, never acknowledged)--> failed
--
-- Under the batched policy (the order's field 'policy'), a pending order waits in the city's
-- match pool instead of the queue: create adds it (from its ready time less the lookahead),
-- a rejected or expired offer puts it back, claim_offer.lua and every other exit from pending
-- take it out; a round's 'attempt' (no lock token) counts at most one attempt per retry delay.
-- A batched order's pickup puts its driver at the drop-off in the city's soon-free set; every
-- transition that lets go of the driver takes it out.
--
-- KEYS[1]      order hash
-- KEYS[2]      drivers hash of the city: driver_id -> packed state (see prelude/codes.lua)
-- KEYS[3]      assignments hash of the order's city: driver_id -> order_id
-- KEYS[4]      the order's excluded-drivers set
-- KEYS[5]      timers sorted set of the order's city: order_id -> due ms
-- KEYS[6]      events stream of the order's city
-- KEYS[7]      dispatch queue stream of the order's city
-- KEYS[8]      the order's lock key
-- KEYS[9]      driver score sorted set of the order's city (a busy driver stays in its order's city)
-- KEYS[10..12] GEO sets of that city, one per status (available, busy, offline); members are
--              tagged with the vehicle type ('b:id', 's:id', 'c:id', 'v:id')
-- KEYS[13]     fencing counter of the order's city (create with a lock token)
-- KEYS[14]     match pool sorted set of the order's city: order_id -> ms from which rounds
--              consider it (batched policy)
-- KEYS[15]     dead-letter stream of the order's city (dead_letter)
-- KEYS[16]     GEO set of the order's city: driver_id at the drop-off of the picked-up order
--              it carries (batched policy), where rounds expect it to be free soon
-- KEYS[17]     arrival tracking hash of the order's city: driver_id -> the target of the
--              driver's open order, "order|fence|phase|lat|lon|since_ms|arrived" (see
--              set_position.lua): accept sets the pickup, pickup the drop-off, and every
--              transition that lets go of the driver removes it
-- KEYS[18]     arrival times hash of the order's city: order_id -> "pickup_ms|dropoff_ms"
--              written by set_position.lua; pickup, deliver and cancel copy them into the order
--              hash ('arrived_p', 'arrived_d'), and the end of the order removes the entry
-- ARGV[1] op: create | accept | reject | pickup | deliver | cancel | timer | attempt |
--         dead_letter
-- ARGV[2] order_id   ARGV[3] the order's city
-- ARGV[4] driver_id and ARGV[5] fencing number sent by the driver (accept, reject, pickup,
--         deliver; '' otherwise)
-- ARGV[6] delay in ms before a pending order is dispatched again (retry timer)
-- ARGV[7] dispatch attempts before a pending order fails   ARGV[8] score added per delivery
-- ARGV[9] events stream MAXLEN (approximate)   ARGV[10] city ops channel
-- ARGV[11] per-driver channel prefix
-- ARGV[12] the caller's lock token: attempt, the token that must hold the order's lock;
--          create, take the new order's lock with it (the caller dispatches at once); '' for
--          neither   ARGV[13] (create with a lock token) the lock's time to live in ms
-- ARGV[14..19] (create) pickup lat, pickup lon, dropoff lat, dropoff lon ('' when none),
--              vehicle type ('' for any), dispatch mode ('now' | 'queued')
-- ARGV[14] (deliver) the score of a driver without one (ranking_unscored_score): a driver's
--              first delivery starts its score from there, as ranking counted it
-- ARGV[15] (deliver) '1': refuse to deliver an order with a drop-off before the driver's
--              arrival there was detected (require_arrival_for_delivery); '' otherwise
-- ARGV[14..17] (dead_letter) the dispatch queue's consumer group, the id of a queue entry for
--              this order, the consumer that took it over, and the deliveries after which it
--              is dead-lettered (queue_max_deliveries)
-- ARGV[20..23] (create) ready time ms ('' when ready at once), policy ('greedy' | 'batched'),
--              match lookahead ms (the pool entry is the ready time less this), clock skew ms
--              (a ready time at most this much before creation is taken as the creation)
-- Returns one of:
--   {'created', now_ms[, fencing]}  create; with a lock token, the lock's fencing number
--   {'ok', new_state, now_ms, field, value, ...}
--                                 the order changed; then its hash fields, so the caller needs
--                                 no read-back (timer: only {'ok', state, now_ms}, also when it
--                                 re-queued a pending order or dropped a stale timer)
--   {'same', state, now_ms, field, value, ...}
--                                 a driver's answer sent again (see below): nothing written;
--                                 the order's hash fields as they are
--   {'missing'}                   no such order (create: never)
--   {'exists'}                    create: the order id is taken; nothing written
--   {'ready_early', now_ms}       create: the ready time is before the creation (beyond the
--                                 clock skew); nothing written
--   {'state', current_state}      the transition is not allowed from the current state
--   {'fence', driver, fence}      the driver or fencing number is not the current offer's
--   {'expired', expires_ms}       accept: the offer has expired
--   {'not_due'}                   timer: nothing is due for this order; attempt without a
--                                 lock token: the last attempt is more recent than the delay
--   {'lock_lost'}                 attempt: the caller no longer holds the order's lock
--   {'not_held'}                  dead_letter: the entry is not pending under that consumer
--                                 (acknowledged, or taken over by another since); nothing
--                                 written
--   {'not_arrived'}               deliver with ARGV[15] '1': no arrival at the drop-off was
--                                 detected; nothing written
--
-- Dead letters. A queue entry's delivery count (XPENDING) counts each time a worker got it: the
-- read, then every XAUTOCLAIM. A worker calls dead_letter for each entry it takes over; once
-- the entry's deliveries before this take-over reach the limit, every one of them failed or
-- died, and it would fail again: the entry moves to the dead-letter stream (its deliveries
-- recorded), is acknowledged and deleted from the queue, and the pending order fails, all
-- here, so the order is failed exactly when its entry is a dead letter. Below the limit it
-- answers 'not_due' and the worker dispatches the order; for an order no longer pending it
-- answers 'state' and the worker acknowledges the entry, as a dispatch would.
--
-- Repeated answers. The order's field 'answered_by' names the driver whose answer (accept,
-- reject, pickup or deliver) produced the order's current state, '' when anything else did:
-- every write of 'state' writes it (claim_offer.lua's too). An answer whose target state is the
-- order's state, from that driver, with the order's fencing number, is the answer that
-- produced it sent again (its reply was lost): it is answered 'same' and writes nothing.
-- Prelude: clock (now_ms), codes (STATUS, TAG, unpack_state, pack_state).
local now = now_ms()
local op, order_id, city = ARGV[1], ARGV[2], ARGV[3]
local retry_ms, maxlen = tonumber(ARGV[6]), ARGV[9]
-- The state each driver's answer leads to.
local ANSWERED = {accept = 'accepted', reject = 'pending', pickup = 'picked_up', deliver = 'delivered'}

local function emit(kind, state, driver, fence)
  local sid = redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 'type', kind,
    'order', order_id, 'driver', driver, 'state', state, 'fence', tostring(fence), 'at', tostring(now))
  local msg = cjson.encode({id = sid, type = kind, order_id = order_id, driver_id = driver,
    state = state, fencing_token = tonumber(fence), at_ms = now, city = city})
  redis.call('PUBLISH', ARGV[10], msg)
  if driver ~= '' then
    redis.call('PUBLISH', ARGV[11] .. driver, msg)
  end
end

-- Dispatch a pending order again: through the queue (with a retry timer), or, under the
-- batched policy, through the next round.
local function requeue()
  if redis.call('HGET', KEYS[1], 'policy') == 'batched' then
    redis.call('ZADD', KEYS[14], now, order_id)
    redis.call('ZREM', KEYS[5], order_id)
    return
  end
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', maxlen, '*', 'order', order_id)
  redis.call('ZADD', KEYS[5], now + retry_ms, order_id)
end

-- The reply `tag, state, now_ms` followed by the order's hash fields.
local function with_order(tag, state)
  local out = {tag, state, tostring(now)}
  for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do
    out[#out + 1] = v
  end
  return out
end

if op == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return {'exists'}
  end
  local ready = now
  if ARGV[20] ~= '' then
    ready = tonumber(ARGV[20])
    if ready < now - tonumber(ARGV[23]) then
      return {'ready_early', tostring(now)}
    end
    ready = math.max(ready, now)
  end
  local policy = ARGV[21]
  redis.call('HSET', KEYS[1], 'id', order_id, 'city', city, 'state', 'pending',
    'plat', ARGV[14], 'plon', ARGV[15], 'dlat', ARGV[16], 'dlon', ARGV[17], 'vehicle', ARGV[18],
    'mode', ARGV[19], 'created', now, 'updated', now, 'driver', '', 'fence', 0, 'expires', 0,
    'attempts', 0, 'answered_by', '', 'ready', ready, 'policy', policy)
  if policy == 'batched' then
    redis.call('ZADD', KEYS[14], math.max(now, ready - tonumber(ARGV[22])), order_id)
  elseif ARGV[19] == 'queued' then
    requeue()
  else
    -- Dispatched by the request itself; the timer re-queues it if that never completes.
    redis.call('ZADD', KEYS[5], now + retry_ms, order_id)
  end
  emit('created', 'pending', '', 0)
  if ARGV[12] ~= '' then
    -- The order is new, so its lock is free: SET NX PX cannot fail here.
    redis.call('SET', KEYS[8], ARGV[12], 'NX', 'PX', ARGV[13])
    return {'created', tostring(now), tostring(redis.call('INCR', KEYS[13]))}
  end
  return {'created', tostring(now)}
end

local o = redis.call('HMGET', KEYS[1], 'state', 'driver', 'fence', 'expires', 'answered_by')
local state, driver, fence, expires, answered_by = o[1], o[2], o[3], o[4], o[5]
if not state then
  return {'missing'}
end

if ANSWERED[op] then
  if state == ANSWERED[op] and answered_by == ARGV[4] and fence == ARGV[5] then
    return with_order('same', state)
  end
  -- A driver's answer must carry the current offer's driver and fencing number.
  if driver ~= ARGV[4] or fence ~= ARGV[5] then
    return {'fence', driver, fence}
  end
end

local next_state
if op == 'accept' then
  if state ~= 'offered' then return {'state', state} end
  if now >= tonumber(expires) then return {'expired', expires} end
  next_state = 'accepted'
elseif op == 'reject' then
  if state ~= 'offered' then return {'state', state} end
  next_state = 'pending'
elseif op == 'pickup' then
  if state ~= 'accepted' then return {'state', state} end
  next_state = 'picked_up'
elseif op == 'deliver' then
  if state ~= 'picked_up' then return {'state', state} end
  if ARGV[15] == '1' and (redis.call('HGET', KEYS[1], 'dlat') or '') ~= '' then
    local times = redis.call('HGET', KEYS[18], order_id) or '|'
    if string.match(times, '|(.*)$') == '' then return {'not_arrived'} end
  end
  next_state = 'delivered'
elseif op == 'cancel' then
  if state ~= 'pending' and state ~= 'offered' and state ~= 'accepted' and state ~= 'picked_up' then
    return {'state', state}
  end
  next_state = 'cancelled'
elseif op == 'timer' then
  local due = redis.call('ZSCORE', KEYS[5], order_id)
  if not due or tonumber(due) > now then return {'not_due'} end
  if state == 'offered' and tonumber(expires) <= now then
    next_state = 'pending'
  elseif state == 'pending' then
    requeue()
    return {'ok', 'pending', tostring(now)}
  else
    redis.call('ZREM', KEYS[5], order_id)
    return {'ok', state, tostring(now)}
  end
elseif op == 'attempt' then
  local round = ARGV[12] == ''
  if not round then
    if redis.call('GET', KEYS[8]) ~= ARGV[12] then return {'lock_lost'} end
    redis.call('DEL', KEYS[8])
  end
  if state ~= 'pending' then return {'state', state} end
  if round then
    -- A matching round found no driver: the order stays in the pool (considered every round)
    -- and counts at most one attempt per retry delay.
    if now < (tonumber(redis.call('HGET', KEYS[1], 'next_attempt')) or 0) then
      return {'not_due'}
    end
    redis.call('HSET', KEYS[1], 'next_attempt', now + retry_ms)
  end
  local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  if attempts < tonumber(ARGV[7]) then
    if not round then
      redis.call('ZADD', KEYS[5], now + retry_ms, order_id)
    end
    return {'ok', 'pending', tostring(now)}
  end
  next_state = 'failed'
  redis.call('HSET', KEYS[1], 'reason', 'no driver available within the dispatch radius after ' .. attempts .. ' attempts')
elseif op == 'dead_letter' then
  local entry = ARGV[15]
  local held = redis.call('XPENDING', KEYS[7], ARGV[14], entry, entry, 1)[1]
  if not held or held[2] ~= ARGV[16] then return {'not_held'} end
  if state ~= 'pending' then return {'state', state} end
  -- The count includes the take-over that called this script, which has not dispatched yet.
  local deliveries = held[4] - 1
  if deliveries < tonumber(ARGV[17]) then return {'not_due'} end
  redis.call('XADD', KEYS[15], 'MAXLEN', '~', maxlen, '*', 'order', order_id, 'entry', entry,
    'deliveries', tostring(deliveries), 'at', tostring(now))
  redis.call('XACK', KEYS[7], ARGV[14], entry)
  redis.call('XDEL', KEYS[7], entry)
  next_state = 'failed'
  redis.call('HSET', KEYS[1], 'reason', 'dispatch failed on each of ' .. deliveries .. ' deliveries from the queue')
else
  return redis.error_reply('unknown op ' .. op)
end

-- Does this transition let go of the order's driver? Check where the driver is before any write.
local frees = driver ~= '' and (next_state == 'pending' or next_state == 'delivered' or next_state == 'cancelled')
local ds
if frees then
  ds = redis.call('HGET', KEYS[2], driver)
end

if frees and ds and redis.call('HGET', KEYS[3], driver) == order_id then
  local rec, lat, lon, status, vehicle, rest = unpack_state(ds)
  if status == 'busy' then
    -- Re-index only a driver that is still indexed (the sweeper drops stale ones).
    if redis.call('ZREM', KEYS[10 + STATUS.busy], TAG[vehicle] .. driver) == 1 then
      redis.call('GEOADD', KEYS[10 + STATUS.available], lon, lat, TAG[vehicle] .. driver)
    end
    redis.call('HSET', KEYS[2], driver, pack_state(rec, lat, lon, 'available', vehicle, rest))
  end
end
if frees then
  if redis.call('HGET', KEYS[3], driver) == order_id then
    redis.call('HDEL', KEYS[3], driver)
    redis.call('ZREM', KEYS[16], driver)
  end
end
if next_state == 'picked_up' then
  local drop = redis.call('HMGET', KEYS[1], 'policy', 'dlat', 'dlon')
  if drop[1] == 'batched' and drop[2] and drop[2] ~= '' then
    redis.call('GEOADD', KEYS[16], drop[3], drop[2], driver)
  end
end

-- Arrival tracking: the driver's target follows the order (accept: the pickup; pickup: the
-- drop-off, if any); the arrival times detected so far go into the order hash at pickup and
-- at the end, and the entries go when the order lets go of the driver.
if next_state == 'accepted' then
  local p = redis.call('HMGET', KEYS[1], 'plat', 'plon')
  redis.call('HSET', KEYS[17], driver, table.concat({order_id, fence, 'p', p[1], p[2], '', '0'}, '|'))
elseif next_state == 'picked_up' or next_state == 'delivered' or next_state == 'cancelled' then
  local times = redis.call('HGET', KEYS[18], order_id)
  if times then
    local p, d = string.match(times, '^([^|]*)|([^|]*)$')
    if p ~= '' then redis.call('HSET', KEYS[1], 'arrived_p', p) end
    if d ~= '' then redis.call('HSET', KEYS[1], 'arrived_d', d) end
    if next_state ~= 'picked_up' then redis.call('HDEL', KEYS[18], order_id) end
  end
  local target = driver ~= '' and redis.call('HGET', KEYS[17], driver)
  local mine = target and string.sub(target, 1, #order_id + 1) == order_id .. '|'
  if next_state == 'picked_up' then
    local d = redis.call('HMGET', KEYS[1], 'dlat', 'dlon')
    if d[1] and d[1] ~= '' then
      redis.call('HSET', KEYS[17], driver, table.concat({order_id, fence, 'd', d[1], d[2], '', '0'}, '|'))
    elseif mine then
      redis.call('HDEL', KEYS[17], driver)
    end
  elseif mine then
    redis.call('HDEL', KEYS[17], driver)
  end
end

local kind = op
if op == 'timer' then kind = 'expired' elseif op == 'attempt' or op == 'dead_letter' then kind = 'failed' end
local ev_kinds = {accept = 'accepted', reject = 'rejected', pickup = 'picked_up',
  deliver = 'delivered', cancel = 'cancelled'}
kind = ev_kinds[kind] or kind

-- Who produced the new state: the answering driver, or nobody (cancel, expiry, failure).
local answerer = ''
if ANSWERED[op] then answerer = driver end
if next_state == 'pending' then
  -- Rejected or expired: never offer this order to that driver again; dispatch it again now.
  redis.call('SADD', KEYS[4], driver)
  redis.call('HSET', KEYS[1], 'state', 'pending', 'driver', '', 'expires', 0, 'updated', now,
    'answered_by', answerer)
  requeue()
else
  -- Accepted and later orders wait on the driver, finished ones on nothing: no timer.
  redis.call('HSET', KEYS[1], 'state', next_state, 'updated', now, 'answered_by', answerer)
  redis.call('ZREM', KEYS[5], order_id)
  redis.call('ZREM', KEYS[14], order_id)
end
if next_state == 'delivered' and ds then
  if redis.call('ZSCORE', KEYS[9], driver) then
    redis.call('ZINCRBY', KEYS[9], ARGV[8], driver)
  else
    redis.call('ZADD', KEYS[9], tonumber(ARGV[14]) + tonumber(ARGV[8]), driver)
  end
end
emit(kind, next_state, driver, fence)
return with_order('ok', next_state)
