-- dep_done.lua: tell a waiting task that one of its dependencies is stored.
--
-- KEYS[1]  record of the waiting (dependent) task
-- KEYS[2]  its deps set
-- KEYS[3]  ready stream of its account
-- KEYS[4]  counts hash of its account
-- KEYS[5]  waiting index of its account
-- ARGV[1]  id of the dependency that is stored
-- ARGV[2]  consumer group
--
-- Idempotent: telling twice, or telling a task that does not exist yet, changes nothing more.
-- Dependencies live under other hash tags, so this is the cross-slot step of the dependency
-- protocol (ARCHITECTURE.md, "Dependencies").
-- Returns 'missing' | 'waiting' | 'ready' | the task's state when it was not waiting.

local t = load_task(KEYS[1])
if t == nil then
  return 'missing'
end
redis.call('SREM', KEYS[2], ARGV[1])
if t.state ~= 'waiting' then
  redis.call('ZREM', KEYS[5], t.id)
  return t.state
end
if redis.call('SCARD', KEYS[2]) > 0 then
  return 'waiting'
end
local err = ensure_group(KEYS[3], ARGV[2])
if err then
  return err
end
local now = now_ms()
push_ready(KEYS[3], t, now)
set_state(KEYS[4], t, 'ready', now)
redis.call('ZREM', KEYS[5], t.id)
save_task(KEYS[1], t)
return finish('ready')
