-- poll_again.lua: a poll found the render still running; schedule the next poll.
--
-- KEYS[1]  await zset
-- ARGV[1]  task id
-- ARGV[2]  delay until the next poll (ms)
--
-- XX: if the render left the schedule meanwhile (another poller saw it finish), nothing is added.
-- Returns 1 when rescheduled, 0 when the task was no longer awaited.

return redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms() + tonumber(ARGV[2]), ARGV[1])
