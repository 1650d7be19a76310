-- ops_move_reserve.lua: step 0 of an operator's move of a dead task to another account (source
-- hash tag). A provider fallback skips this step: fail.lua / reap_lease.lua record the move.
--
-- KEYS[1]  task record in the source account
-- KEYS[2]  dead zset of the source account
-- KEYS[3]  moves zset of the source account (outbox of unfinished moves)
-- KEYS[4]  counts hash of the source account
-- ARGV[1]  target account
--
-- dead → moving: the record gets `moving_to = target`, leaves the dead-letter set and enters the
-- moves outbox, so from now on only that move can take it (in-place requeue and purge leave a
-- moving task alone) and, should the mover crash, the reaper's moves duty finishes it. A task
-- already moving keeps its target: the caller finishes that move instead.
-- Returns {'reserved', target, record} | {'moving', its target, record} (already moving: to the
-- same target or another) | {'not_dead', state, ''} | {'gone', '', ''}.

local raw = redis.call('GET', KEYS[1])
if not raw then
  return { 'gone', '', '' }
end
local t = decode_record(raw)
if t.state == 'moving' then
  return { 'moving', t.moving_to, raw }
end
if t.state ~= 'dead' then
  return { 'not_dead', tostring(t.state), '' }
end
local now = now_ms()
-- A dead record marked by an older version (dead with `moving_to`) keeps its target.
local target = t.moving_to or ARGV[1]
t.moving_to = target
redis.call('ZREM', KEYS[2], t.id)
redis.call('ZADD', KEYS[3], now, t.id)
set_state(KEYS[4], t, 'moving', now)
save_task(KEYS[1], t)
if target ~= ARGV[1] then
  return finish({ 'moving', target, encode_record(t) })
end
return finish({ 'reserved', target, encode_record(t) })
