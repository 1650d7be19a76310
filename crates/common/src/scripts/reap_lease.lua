-- reap_lease.lua: act on one lease that ran out (its holder stopped heartbeating).
--
-- KEYS[1]  task record
-- KEYS[2]  leases zset
-- KEYS[3]  ready stream
-- KEYS[4]  await zset
-- KEYS[5]  dead zset
-- KEYS[6]  counts hash
-- KEYS[7]  stats hash
-- KEYS[8]  render slots zset (released unless the render goes on at the provider)
-- KEYS[9]  moves zset (outbox of tasks moving to another account)
-- ARGV[1]  consumer group
-- ARGV[2]  most stalls allowed before the task is dead as `stalled`
-- ARGV[3]  provider task id found by reconciliation ('' when none), for `submitting` tasks
-- ARGV[4]  poll locator found by reconciliation ('' when none)
-- ARGV[5]  the next account of the task's provider chain ('' when none): a task that stalled
--          too often falls back there (`moving`, with an outbox entry) instead of dying
-- ARGV[6]  '1' when the account charges for a submit; an in-process account (assembly) does
--          not, so a resubmit there is not a possible duplicate payment
--
-- Leases, not idle time (invariant 4): nothing happens unless the lease really expired by the
-- Redis clock. What follows depends on how far the holder got:
--   claimed      nothing reached the provider   -> ready again
--   submitting   with a reconciled provider id  -> rendering (adopt; no second submit)
--   submitting   without                        -> ready again, flagged possible_duplicate
--   downloading  the render exists              -> rendering, due now (poll, then download)
-- Past `max stalls` the task fails as `stalled`: moving to the next account when there is one,
-- else dead.
-- Returns the action: 'not_expired' | 'requeued' | 'adopted' | 'resubmit' | 'repoll' | 'moved'
-- | 'dead' | 'gone'.

local err = ensure_group(KEYS[3], ARGV[1])
if err then
  return err
end
local t = load_task(KEYS[1])
local now = now_ms()
if t == nil then
  return 'gone'
end
local score = redis.call('ZSCORE', KEYS[2], t.id)
if not score then
  return 'gone'
end
if tonumber(score) > now then
  return 'not_expired'
end
redis.call('ZREM', KEYS[2], t.id)
t.holder = nil
t.stalls = (t.stalls or 0) + 1
redis.call('HINCRBY', KEYS[7], 'stalls', 1)
local action
if t.state == 'downloading' then
  redis.call('ZADD', KEYS[4], now, t.id)
  set_state(KEYS[6], t, 'rendering', now)
  action = 'repoll'
elseif t.state == 'submitting' and ARGV[3] ~= '' then
  t.provider_task_id = ARGV[3]
  if ARGV[4] ~= '' then
    t.poll_locator = ARGV[4]
  end
  redis.call('ZADD', KEYS[4], now, t.id)
  set_state(KEYS[6], t, 'rendering', now)
  action = 'adopted'
else
  redis.call('ZREM', KEYS[8], t.id)
end
if action ~= nil then
  -- the render goes on at the provider (repoll, adopted): it keeps its slot
elseif t.stalls > tonumber(ARGV[2]) then
  t.failure = 'stalled'
  append_error(t, 'stalled', '', 'lease expired ' .. t.stalls .. ' times', now)
  if ARGV[5] ~= '' then
    t.moving_to = ARGV[5]
    redis.call('ZADD', KEYS[9], now, t.id)
    set_state(KEYS[6], t, 'moving', now)
    action = 'moved'
  else
    t.done_ms = now
    redis.call('ZADD', KEYS[5], now, t.id)
    set_state(KEYS[6], t, 'dead', now)
    action = 'dead'
  end
elseif t.state == 'submitting' then
  if ARGV[6] == '1' then
    t.possible_duplicate = true
    redis.call('HINCRBY', KEYS[7], 'possible_duplicates', 1)
  end
  push_ready(KEYS[3], t, now)
  set_state(KEYS[6], t, 'ready', now)
  action = 'resubmit'
elseif t.state == 'claimed' then
  push_ready(KEYS[3], t, now)
  set_state(KEYS[6], t, 'ready', now)
  action = 'requeued'
else
  -- A lease on a task in any other state is a leftover; dropping it is all there is to do.
  return 'gone'
end
save_task(KEYS[1], t)
return finish(action)
