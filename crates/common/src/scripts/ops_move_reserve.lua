-- ops_move_reserve.lua: step 0 of moving a dead task to another account (source hash tag).
--
-- KEYS[1]  task record in the source account
-- ARGV[1]  target account
--
-- Marks the dead record with `moving_to = target` so that from now on only that move can take
-- it: ops_requeue.lua and ops_purge.lua leave a reserved task alone, and a second move to another
-- target finishes this one instead. The record stays dead (and counted dead) until
-- ops_move_out.lua deletes it, after the copy in the target account exists.
-- Returns {'reserved', target, record} (also when already reserved for the same target)
--       | {'moving', other target, record} | {'not_dead', state, ''} | {'gone', '', ''}.

local raw = redis.call('GET', KEYS[1])
if not raw then
  return { 'gone', '', '' }
end
local t = decode_record(raw)
if t.state ~= 'dead' then
  return { 'not_dead', tostring(t.state), '' }
end
if t.moving_to ~= nil then
  if t.moving_to == ARGV[1] then
    return { 'reserved', t.moving_to, raw }
  end
  return { 'moving', t.moving_to, raw }
end
t.moving_to = ARGV[1]
save_task(KEYS[1], t)
return { 'reserved', ARGV[1], raw }
