-- ops_requeue.lua: put one dead task back on its own account's ready stream (`dlq requeue`).
--
-- KEYS[1]  task record
-- KEYS[2]  ready stream
-- KEYS[3]  dead zset
-- KEYS[4]  leases zset
-- KEYS[5]  await zset
-- KEYS[6]  delayed zset
-- KEYS[7]  counts hash
-- KEYS[8]  render slots zset
-- ARGV[1]  consumer group
--
-- Guarded: only a task that is still `dead` moves, so two operators requeueing the same task at
-- once produce exactly one stream entry. A task reserved for a move to another account
-- (`moving_to`, set by ops_move_reserve.lua) is left alone: the caller finishes that move.
-- Attempts, failure class, stalls, the duplicate flag and the provider fields are reset; the
-- error history is kept.
-- Returns {'requeued', stream entry id} | {'not_dead', state} | {'moving', target} | {'gone', ''}.

local t = load_task(KEYS[1])
if t == nil then
  return { 'gone', '' }
end
if t.state == 'moving' then
  return { 'moving', t.moving_to }
end
if t.state ~= 'dead' then
  return { 'not_dead', tostring(t.state) }
end
if t.moving_to ~= nil then
  return { 'moving', t.moving_to }
end
local err = ensure_group(KEYS[2], ARGV[1])
if err then
  return err
end
local now = now_ms()
t.attempt = nil
t.failure = nil
t.stalls = nil
t.possible_duplicate = nil
t.provider_task_id = nil
t.poll_locator = nil
t.result = nil
t.holder = nil
t.polls = nil
t.output = nil
t.sha256 = nil
t.bytes = nil
t.submitted_ms = nil
t.done_ms = nil
redis.call('ZREM', KEYS[3], t.id)
redis.call('ZREM', KEYS[4], t.id)
redis.call('ZREM', KEYS[5], t.id)
redis.call('ZREM', KEYS[6], t.id)
redis.call('ZREM', KEYS[8], t.id)
push_ready(KEYS[2], t, now)
set_state(KEYS[7], t, 'ready', now)
save_task(KEYS[1], t)
return finish({ 'requeued', t.entry })
