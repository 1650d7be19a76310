-- poll_take.lua: take the renders that are due for a poll, under a poll lease.
--
-- KEYS[1]  await zset
-- ARGV[1]  how many at most
-- ARGV[2]  poll lease (ms)
--
-- Taking a render pushes its score forward by the poll lease: if this poller dies, the render
-- becomes due again for another one. Nothing is resubmitted; a poll is read-only at the provider.
-- Returns {now_ms, id1, due_ms1, id2, due_ms2, ...}: the Redis clock at the take and, per render
-- taken, when it was due, so pollers can measure poll lateness against one clock.

local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local until_ms = now + tonumber(ARGV[2])
local out = {now}
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], until_ms, due[i])
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
end
return out
