-- fail.lua: apply the worker's decision about a failed attempt.
--
-- KEYS[1]  task record
-- KEYS[2]  leases zset
-- KEYS[3]  await zset
-- KEYS[4]  delayed zset
-- KEYS[5]  dead zset
-- KEYS[6]  counts hash
-- KEYS[7]  render slots zset
-- KEYS[8]  cooldown flag
-- KEYS[9]  paused flag
-- KEYS[10] ready stream
-- KEYS[11] moves zset (outbox of tasks moving to another account)
-- ARGV[1]  guard: 'held' (caller holds the lease) or 'render' (a poll saw the failure)
-- ARGV[2]  fencing token ('held') or provider task id ('render')
-- ARGV[3]  decision: 'retry' (resubmit later), 'repoll' (keep the render, poll again later: a
--          finished render whose download failed), 'pause' (the account is out of credits or
--          over a spend cap: pause it and put the task back, waiting), 'move' (fall back to
--          another account: recorded here, finished by the moves outbox), or 'dead'
-- ARGV[4]  delay (ms) for retry / repoll
-- ARGV[5]  '1' to give the attempt back (rate and concurrency limits do not use attempts)
-- ARGV[6]  failure class, ARGV[7] provider code ('' for none), ARGV[8] message (no secrets)
-- ARGV[9]  account cool-down (ms) to start or extend, 0 for none: one 429 slows every worker
-- ARGV[10] consumer group
-- ARGV[11] target account for 'move' ('' otherwise)
--
-- The decision is made in Rust (crates/worker/src/decide.rs); this script only applies it, after
-- checking that the caller still has the right to. A 'move' leaves the task `moving` with an
-- outbox entry in the same step, so a crash before the move's later steps cannot leave it dead:
-- whoever reads the outbox next finishes the move. Returns the new state, or an error "FENCED".

local t = load_task(KEYS[1])
if t == nil then
  return redis.error_reply('FENCED')
end
if ARGV[1] == 'held' then
  if tostring(t.fence) ~= ARGV[2]
      or (t.state ~= 'claimed' and t.state ~= 'submitting' and t.state ~= 'downloading') then
    return redis.error_reply('FENCED')
  end
elseif t.state ~= 'rendering' or t.provider_task_id ~= ARGV[2] then
  return redis.error_reply('FENCED')
end
if ARGV[3] == 'pause' then
  local err = ensure_group(KEYS[10], ARGV[10])
  if err then
    return err
  end
end
local now = now_ms()
if ARGV[5] == '1' and (t.attempt or 0) > 0 then
  t.attempt = t.attempt - 1
end
append_error(t, ARGV[6], ARGV[7], ARGV[8], now)
-- Keep the history bounded per task: the first errors explain the cause, the last the end.
if #t.errors > 40 then
  table.remove(t.errors, 11)
end
local cooldown = tonumber(ARGV[9])
if cooldown > 0 and redis.call('PTTL', KEYS[8]) < cooldown then
  redis.call('SET', KEYS[8], ARGV[6], 'PX', cooldown)
end
t.holder = nil
redis.call('ZREM', KEYS[2], t.id)
local decision = ARGV[3]
if decision ~= 'repoll' then
  redis.call('ZREM', KEYS[7], t.id)
  redis.call('ZREM', KEYS[3], t.id)
end
if decision == 'retry' then
  t.provider_task_id = nil
  t.poll_locator = nil
  t.result = nil
  t.fetch_failures = nil
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), t.id)
  set_state(KEYS[6], t, 'delayed', now)
elseif decision == 'repoll' then
  t.result = nil
  t.fetch_failures = (t.fetch_failures or 0) + 1
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), t.id)
  set_state(KEYS[6], t, 'rendering', now)
elseif decision == 'pause' then
  t.provider_task_id = nil
  t.poll_locator = nil
  t.result = nil
  t.fetch_failures = nil
  local reason = cjson.encode({ reason = ARGV[6], message = ARGV[8], since_ms = now, by = 'worker' })
  redis.call('SET', KEYS[9], reason, 'NX')
  push_ready(KEYS[10], t, now)
  set_state(KEYS[6], t, 'ready', now)
elseif decision == 'move' then
  t.failure = ARGV[6]
  t.moving_to = ARGV[11]
  redis.call('ZREM', KEYS[4], t.id)
  redis.call('ZADD', KEYS[11], now, t.id)
  set_state(KEYS[6], t, 'moving', now)
else
  t.failure = ARGV[6]
  t.done_ms = now
  redis.call('ZREM', KEYS[4], t.id)
  redis.call('ZADD', KEYS[5], now, t.id)
  set_state(KEYS[6], t, 'dead', now)
end
save_task(KEYS[1], t)
return finish(t.state)
