-- poll_again.lua: polls found renders still running; schedule their next polls.
--
-- KEYS[1]          await zset
-- ARGV[2i-1..2i]   for render i: task id, delay until its next poll (ms)
--
-- XX: a render that left the schedule meanwhile (another poller saw it finish) is not added back.
-- Coalesced: the pollers of one process send the reschedules of many renders in one call.
-- Returns, per render: 1 rescheduled, 0 no longer awaited.

local now = now_ms()
local out = {}
for i = 1, #ARGV, 2 do
  out[#out + 1] = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[i + 1]), ARGV[i])
end
return out
