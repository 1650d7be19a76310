-- release.lua: give back a claimed task that was never submitted (shutdown, quota wait).
--
-- KEYS[1]  task record
-- KEYS[2]  leases zset
-- KEYS[3]  ready stream
-- KEYS[4]  counts hash
-- KEYS[5]  render slots zset
-- ARGV[1]  fencing token
--
-- Returns 1, or an error "FENCED".

local t = load_task(KEYS[1])
if t == nil or t.state ~= 'claimed' or tostring(t.fence) ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
local now = now_ms()
t.holder = nil
redis.call('ZREM', KEYS[2], t.id)
redis.call('ZREM', KEYS[5], t.id)
push_ready(KEYS[3], t, now)
set_state(KEYS[4], t, 'ready', now)
save_task(KEYS[1], t)
return finish(1)
