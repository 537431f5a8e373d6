-- webhook_fanout.lua: queue order events for the webhook endpoints that want them, and move a
-- city's fan-out cursor past them, in one step: an instance that dies before it ran changed
-- nothing, and two instances fanning out the same events queue them once (the second finds the
-- cursor moved and reads again). Also queues one message again for a manual retry (no cursor).
--
-- KEYS[1] the city's fan-out cursor (string: last event id fanned out)
-- KEYS[2] the due sorted set: <endpoint>:<lane> -> ms the lane is next due
-- KEYS[3k], KEYS[3k+1], KEYS[3k+2] (k = 1..n): endpoint hash, lane list, delivery log stream
-- ARGV[1] the cursor the caller read ('' = no cursor: a manual retry)
-- ARGV[2] the cursor after these events
-- ARGV[3] the largest backlog of an endpoint (webhook_max_backlog)
-- ARGV[2k+2], ARGV[2k+3] (k = 1..n): the lane's member (<endpoint>:<lane>), the message JSON
--         ({id, type, order, payload}); one pair per (event, endpoint) in event order
-- Returns {moved, queued, dropped}: moved 0 when the cursor was not ARGV[1] (nothing done).
-- Prelude: clock (now_ms).
if ARGV[1] ~= '' then
  local cursor = redis.call('GET', KEYS[1]) or ''
  if cursor ~= ARGV[1] then
    return {0, 0, 0}
  end
  redis.call('SET', KEYS[1], ARGV[2])
end
local now = now_ms()
local max_backlog = tonumber(ARGV[3])
local queued, dropped = 0, 0
local n = (#KEYS - 2) / 3
for k = 1, n do
  local endpoint, lane, log = KEYS[3 * k], KEYS[3 * k + 1], KEYS[3 * k + 2]
  local member, message = ARGV[2 * k + 2], ARGV[2 * k + 3]
  local e = redis.call('HMGET', endpoint, 'enabled', 'backlog')
  if e[1] == '1' or (ARGV[1] == '' and e[1]) then
    if tonumber(e[2] or '0') >= max_backlog then
      local m = cjson.decode(message)
      redis.call('XADD', log, 'MAXLEN', '~', 1000, '*', 'id', m.id, 'type', m.type,
        'attempt', 0, 'outcome', 'dropped', 'code', 0, 'latency_ms', 0, 'next_ms', 0,
        'error', 'backlog full', 'at', now, 'payload', m.payload, 'order', m.order)
      dropped = dropped + 1
    else
      redis.call('RPUSH', lane, message)
      redis.call('HINCRBY', endpoint, 'backlog', 1)
      redis.call('ZADD', KEYS[2], 'NX', now, member)
      queued = queued + 1
    end
  end
end
return {1, queued, dropped}
