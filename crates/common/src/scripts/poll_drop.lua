-- poll_drop.lua: take an entry out of the await schedule when its task awaits no render.
--
-- KEYS[1]  await zset
-- KEYS[2]  task record
-- ARGV[1]  task id
--
-- A poller found the record gone (purged) or in another state. Without this the entry would be
-- taken again at every poll lease end, forever. The state is checked again here, atomically, so
-- a task that went back to `rendering` meanwhile (a repoll) keeps its entry.
-- Returns 1 when the entry was removed, 0 when it was kept or absent.

local t = load_task(KEYS[2])
if t ~= nil and t.state == 'rendering' then
  return 0
end
return redis.call('ZREM', KEYS[1], ARGV[1])
