-- render_done.lua: a poll saw the render succeed; the poller takes it under a lease to download.
--
-- KEYS[1]  task record
-- KEYS[2]  await zset
-- KEYS[3]  leases zset
-- KEYS[4]  counts hash
-- KEYS[5]  render slots zset (the provider's render is over: its slot is free)
-- ARGV[1]  provider task id the poll was about
-- ARGV[2]  result JSON
-- ARGV[3]  worker id
-- ARGV[4]  lease length (ms)
--
-- Only the first poller to see success moves the task; a second one finds it `downloading`.
-- Returns the new fencing token, or an error "FENCED".

local t = load_task(KEYS[1])
if t == nil or t.state ~= 'rendering' or t.provider_task_id ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
local now = now_ms()
t.result = ARGV[2]
t.fence = (t.fence or 0) + 1
t.holder = ARGV[3]
set_state(KEYS[4], t, 'downloading', now)
save_task(KEYS[1], t)
redis.call('ZREM', KEYS[2], t.id)
redis.call('ZREM', KEYS[5], t.id)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), t.id)
return finish(t.fence)
