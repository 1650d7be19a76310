-- mark_accepted.lua: the provider accepted the render; save its id and hand the task to the
-- await schedule. The worker's slot is free from here on.
--
-- KEYS[1]  task record
-- KEYS[2]  leases zset
-- KEYS[3]  await zset
-- KEYS[4]  counts hash
-- ARGV[1]  fencing token
-- ARGV[2]  provider task id
-- ARGV[3]  poll locator JSON ('' for none)
-- ARGV[4]  delay before the first poll (ms)
--
-- Returns 1, or an error "FENCED".

local t = load_task(KEYS[1])
if t == nil or t.state ~= 'submitting' or tostring(t.fence) ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
local now = now_ms()
t.provider_task_id = ARGV[2]
if ARGV[3] ~= '' then
  t.poll_locator = ARGV[3]
end
t.holder = nil
t.polls = 0
set_state(KEYS[4], t, 'rendering', now)
save_task(KEYS[1], t)
redis.call('ZREM', KEYS[2], t.id)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), t.id)
return finish(1)
