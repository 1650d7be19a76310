-- ops_purge.lua: delete one dead task for good (`dlq purge --yes`).
--
-- KEYS[1]  task record
-- KEYS[2]  dead zset
-- KEYS[3]  counts hash
-- KEYS[4]  deps set of the task
-- KEYS[5]  dependents set of the task
-- KEYS[6]  render slots zset
--
-- Guarded like ops_requeue.lua: only a task still `dead` and not reserved for a move to another
-- account is deleted (a reserved one may already be live in its new account). The caller then
-- drops the task from its dependencies' dependents sets and from the season index.
-- Returns 'purged' | 'not_dead' | 'moving' | 'gone'.

local t = load_task(KEYS[1])
if t == nil then
  return 'gone'
end
if t.state == 'moving' then
  return 'moving'
end
if t.state ~= 'dead' then
  return 'not_dead'
end
if t.moving_to ~= nil then
  return 'moving'
end
local deltas = count_deltas[KEYS[3]] or {}
count_deltas[KEYS[3]] = deltas
local field = t.season .. '|' .. t.state
deltas[field] = (deltas[field] or 0) - 1
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[2], t.id)
redis.call('ZREM', KEYS[6], t.id)
return finish('purged')
