-- poll_again.lua: polls found renders still running; schedule their next polls.
--
-- KEYS[1]          await zset
-- ARGV[2i-1..2i]   for render i: task id, delay until its next poll (ms)
--
-- Only entries still in the schedule are moved: a render that left it meanwhile (another poller
-- saw it finish) is not added back. Coalesced: the pollers of one process send the reschedules
-- of many renders in one call.
-- Returns, per render: 1 rescheduled, 0 no longer awaited.

local now = now_ms()
local out = {}
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i + 1]), ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
