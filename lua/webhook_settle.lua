-- webhook_settle.lua: record the end of one attempt to send a lane's head, if the sender still
-- holds the lane (a sender whose lease ran out and was taken over changes nothing).
--
-- KEYS[1] the due sorted set: <endpoint>:<lane> -> ms the lane is next due
-- KEYS[2] the lease hash: <endpoint>:<lane> -> token, <endpoint>:<lane>:tries -> n
-- KEYS[3] the lane list (head: the message sent)
-- KEYS[4] the endpoint hash (enabled, failures, backlog)
-- KEYS[5] the endpoint's delivery log stream
-- ARGV[1] the lane's member (<endpoint>:<lane>)
-- ARGV[2] the sender's token
-- ARGV[3] outcome: 'delivered', 'retry' (again at ARGV[5]), 'dead' (dead-lettered), 'gone'
--         (410: dead-lettered and the endpoint disabled), 'park' (endpoint disabled: lane
--         left until it is enabled), 'empty' (nothing to send)
-- ARGV[4] the webhook id of the message sent
-- ARGV[5] next attempt, ms (retry) or when to look at a parked lane again
-- ARGV[6] dead letters in a row that disable the endpoint (webhook_disable_after)
-- ARGV[7] the attempt number, ARGV[8] HTTP status (0: none), ARGV[9] latency ms,
-- ARGV[10] error text
-- Returns {result, disabled}: result 'stale' (lease lost), 'empty', 'parked' or the outcome;
-- disabled 1 when this dead letter disabled the endpoint.
-- Prelude: clock (now_ms).
local member, outcome = ARGV[1], ARGV[3]
if redis.call('HGET', KEYS[2], member) ~= ARGV[2] then
  return {'stale', 0}
end
local now = now_ms()
if outcome == 'park' then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[5]), member)
  redis.call('HDEL', KEYS[2], member)
  return {'parked', 0}
end
local head = redis.call('LINDEX', KEYS[3], 0)
if (not head) or outcome == 'empty' then
  if not head then
    redis.call('ZREM', KEYS[1], member)
    redis.call('HDEL', KEYS[2], member, member .. ':tries')
  else
    redis.call('ZADD', KEYS[1], now, member)
    redis.call('HDEL', KEYS[2], member)
  end
  return {'empty', 0}
end
local m = cjson.decode(head)
if m.id ~= ARGV[4] then
  return {'stale', 0}
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', 1000, '*', 'id', m.id, 'type', m.type,
  'attempt', ARGV[7], 'outcome', outcome, 'code', ARGV[8], 'latency_ms', ARGV[9],
  'next_ms', (outcome == 'retry') and ARGV[5] or 0, 'error', ARGV[10], 'at', now,
  'payload', m.payload, 'order', m.order)
if outcome == 'retry' then
  redis.call('HSET', KEYS[2], member .. ':tries', ARGV[7])
  redis.call('ZADD', KEYS[1], tonumber(ARGV[5]), member)
  redis.call('HDEL', KEYS[2], member)
  return {'retry', 0}
end
redis.call('LPOP', KEYS[3])
redis.call('HDEL', KEYS[2], member, member .. ':tries')
local disabled = 0
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HINCRBY', KEYS[4], 'backlog', -1)
  if outcome == 'delivered' then
    redis.call('HSET', KEYS[4], 'failures', 0)
  else
    local failures = redis.call('HINCRBY', KEYS[4], 'failures', 1)
    if redis.call('HGET', KEYS[4], 'enabled') == '1'
      and (outcome == 'gone' or failures >= tonumber(ARGV[6])) then
      redis.call('HSET', KEYS[4], 'enabled', '0')
      disabled = 1
    end
  end
end
if redis.call('LLEN', KEYS[3]) > 0 then
  redis.call('ZADD', KEYS[1], now, member)
else
  redis.call('ZREM', KEYS[1], member)
end
return {outcome, disabled}
