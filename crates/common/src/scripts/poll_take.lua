-- poll_take.lua: take the renders that are due for a poll, under a poll lease.
--
-- KEYS[1]  await zset
-- ARGV[1]  how many at most
-- ARGV[2]  poll lease (ms)
--
-- Taking a render pushes its score forward by the poll lease: if this poller dies, the render
-- becomes due again for another one. Nothing is resubmitted; a poll is read-only at the provider.
-- Returns {now_ms, next_due_ms, id1, due_ms1, id2, due_ms2, ...}: the Redis clock at the take,
-- when the earliest render left in the schedule is due (-1: none), and per render taken when it
-- was due. Pollers measure lateness against this one clock and sleep until the next due time.

local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local until_ms = now + tonumber(ARGV[2])
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], until_ms, due[i])
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local out = {now, -1}
if first[2] then
  out[2] = tonumber(first[2])
end
for i = 1, #due do
  out[#out + 1] = due[i]
end
return out
