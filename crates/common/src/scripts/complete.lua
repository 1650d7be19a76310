-- complete.lua: the output is in storage with its checksum; the task is done.
--
-- KEYS[1]  task record
-- KEYS[2]  leases zset
-- KEYS[3]  counts hash
-- KEYS[4]  notify zset (outbox of stored tasks whose dependents must be told)
-- KEYS[5]  dependents set of this task
-- ARGV[1]  fencing token
-- ARGV[2]  output location (relative to the storage root)
-- ARGV[3]  sha256 hex
-- ARGV[4]  size in bytes
--
-- Stored before done (invariant 7): the caller has already renamed the file into place. Tasks
-- with dependents enter the notify outbox in the same step, so a crash before they are told
-- cannot strand them.
-- Returns 1, or an error "FENCED".

local t = load_task(KEYS[1])
if t == nil or tostring(t.fence) ~= ARGV[1]
    or (t.state ~= 'claimed' and t.state ~= 'submitting' and t.state ~= 'downloading') then
  return redis.error_reply('FENCED')
end
local now = now_ms()
t.output = ARGV[2]
t.sha256 = ARGV[3]
t.bytes = tonumber(ARGV[4])
t.holder = nil
t.done_ms = now
set_state(KEYS[3], t, 'stored', now)
save_task(KEYS[1], t)
redis.call('ZREM', KEYS[2], t.id)
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('ZADD', KEYS[4], now, t.id)
end
return 1
