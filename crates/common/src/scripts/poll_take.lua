-- poll_take.lua: take the renders that are due for a poll, under a poll lease.
--
-- KEYS[1]  await zset
-- ARGV[1]  how many at most
-- ARGV[2]  poll lease (ms)
--
-- Taking a render pushes its score forward by the poll lease: if this poller dies, the render
-- becomes due again for another one. Nothing is resubmitted; a poll is read-only at the provider.
-- Returns the task ids taken.

local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local until_ms = now + tonumber(ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], until_ms, id)
end
return ids
