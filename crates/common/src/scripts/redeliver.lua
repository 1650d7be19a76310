-- redeliver.lua: recover a stream delivery whose reader died before claiming it.
--
-- KEYS[1]  task record
-- KEYS[2]  ready stream
-- ARGV[1]  consumer group
-- ARGV[2]  entry id found idle in the pending-entries list
--
-- The task is still `ready` (claim.lua never ran for it), so no work started; the entry is
-- replaced by a fresh one that any worker can read. Returns 1 when re-added, 0 when the entry
-- was only stale.

redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
local t = load_task(KEYS[1])
if t == nil or t.state ~= 'ready' or t.entry ~= ARGV[2] then
  return 0
end
push_ready(KEYS[2], t, t.ready_ms or now_ms())
save_task(KEYS[1], t)
return 1
