-- ops_move_out.lua: last step of moving a dead task to another account (source hash tag).
--
-- KEYS[1]  task record in the source account
-- KEYS[2]  dead zset of the source account
-- KEYS[3]  counts hash of the source account
-- KEYS[4]  deps set of the task in the source account
-- KEYS[5]  dependents set of the task in the source account
-- KEYS[6]  render slots zset of the source account
-- ARGV[1]  target account
--
-- Runs only after the copy in the target exists and the season index points at it. Deletes the
-- source copy only when it is still dead and reserved for this very target, so a re-run, or a
-- task that was never reserved, changes nothing. Returns 'removed' | 'not_moving' | 'gone'.

local t = load_task(KEYS[1])
if t == nil then
  return 'gone'
end
if t.state ~= 'dead' or t.moving_to ~= ARGV[1] then
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
