-- ops_move_out.lua: last step of moving a task to another account (source hash tag).
--
-- KEYS[1]  task record in the source account
-- KEYS[2]  moves zset of the source account
-- KEYS[3]  counts hash of the source account
-- KEYS[4]  deps set of the task in the source account
-- KEYS[5]  dependents set of the task in the source account
-- KEYS[6]  render slots zset of the source account
-- ARGV[1]  target account ('' to only clear a stale outbox entry)
-- ARGV[2]  task id
--
-- Runs only after the copy in the target exists and the season index points at it. Deletes the
-- source copy only when it is still `moving` to this very target, so a re-run, or a task that
-- was never moving, changes nothing. The moves outbox entry goes in the same step; an entry whose
-- task is gone or no longer moving is cleared too. Returns 'removed' | 'not_moving' | 'gone'.

local t = load_task(KEYS[1])
if t == nil then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 'gone'
end
if t.state ~= 'moving' then
  redis.call('ZREM', KEYS[2], t.id)
  return 'not_moving'
end
if t.moving_to ~= ARGV[1] then
  return 'not_moving'
end
local deltas = count_deltas[KEYS[3]] or {}
count_deltas[KEYS[3]] = deltas
local field = t.season .. '|' .. t.state
deltas[field] = (deltas[field] or 0) - 1
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[2], t.id)
redis.call('ZREM', KEYS[6], t.id)
return finish('removed')
