-- promote.lua: move one due retry from the delayed schedule onto the ready stream.
--
-- KEYS[1]  task record
-- KEYS[2]  delayed zset
-- KEYS[3]  ready stream
-- KEYS[4]  counts hash
-- ARGV[1]  consumer group
--
-- Safe to run from several processes at once: only a task still scheduled and due moves.
-- Returns 1 when promoted, 0 otherwise.

local t = load_task(KEYS[1])
if t == nil then
  return 0
end
local score = redis.call('ZSCORE', KEYS[2], t.id)
local now = now_ms()
if not score or tonumber(score) > now or t.state ~= 'delayed' then
  return 0
end
local err = ensure_group(KEYS[3], ARGV[1])
if err then
  return err
end
redis.call('ZREM', KEYS[2], t.id)
push_ready(KEYS[3], t, now)
set_state(KEYS[4], t, 'ready', now)
save_task(KEYS[1], t)
return finish(1)
