-- mark_accepted.lua: the provider accepted the render; save its id and hand the task to the
-- await schedule. The worker's slot is free from here on.
--
-- KEYS[1]  task record
-- KEYS[2]  leases zset
-- KEYS[3]  await zset
-- KEYS[4]  counts hash
-- KEYS[5]  delayed zset
-- KEYS[6]  stats hash
-- ARGV[1]  fencing token
-- ARGV[2]  provider task id
-- ARGV[3]  poll locator JSON ('' for none)
-- ARGV[4]  delay before the first poll (ms)
-- ARGV[5]  the attempt number the caller's submit was recorded as (mark_submitting's answer)
--
-- The caller has paid for this render, so it is never simply discarded:
--   accepted  the record is `submitting` under the caller's token: the normal path.
--   adopted   nobody claimed the task since the caller did (the record's token is not newer)
--             and it has no render: it is `claimed` or `submitting` (the record went back in
--             time: Redis lost the `submitting` write after a restart from an AOF that missed
--             its last second, or lost the claim and another worker claimed it with the same
--             token), or `ready`/`delayed` (taken back by the reaper while this submit was
--             slow). The render is attached (its attempt counted once) and the record is
--             `rendering`;
--             whoever else holds it, or reads its stale stream entry, is refused from now on,
--             so it is not paid for a second time.
--   orphaned  another holder claimed it since (newer token), or it has a render or an output,
--             or is gone: this render cannot be attached. The record (if any) is flagged
--             `possible_duplicate`; the account's `orphaned_renders` counter goes up, and
--             `possible_duplicates` once per task, so no double payment goes unnoticed.
-- A render already recorded under this provider task id is 'accepted' again and nothing changes,
-- so the call can be replayed (`crates/worker/src/journal.rs`).
-- Returns 'accepted' | 'adopted' | 'orphaned'.

local t = load_task(KEYS[1])
local now = now_ms()
if t == nil then
  redis.call('HINCRBY', KEYS[6], 'orphaned_renders', 1)
  redis.call('HINCRBY', KEYS[6], 'possible_duplicates', 1)
  return 'orphaned'
end
local outcome
if t.provider_task_id == ARGV[2] then
  -- Already recorded (a replay after a Redis restart found the write survived): nothing to do.
  return 'accepted'
end
if t.state == 'submitting' and tostring(t.fence) == ARGV[1] then
  outcome = 'accepted'
elseif t.provider_task_id == nil and (t.fence or 0) <= tonumber(ARGV[1])
    and (t.state == 'claimed' or t.state == 'submitting' or t.state == 'ready'
      or t.state == 'delayed') then
  outcome = 'adopted'
  -- The record may have lost the write that counted this attempt: it counts it again, never
  -- twice (a task the reaper took back from `submitting` counted it already).
  local attempt = tonumber(ARGV[5])
  if (t.attempt or 0) < attempt then
    t.attempt = attempt
    t.submitted_ms = now
  end
  redis.call('ZREM', KEYS[5], t.id)
  redis.call('HINCRBY', KEYS[6], 'adopted_late', 1)
else
  redis.call('HINCRBY', KEYS[6], 'orphaned_renders', 1)
  if not t.possible_duplicate then
    t.possible_duplicate = true
    redis.call('HINCRBY', KEYS[6], 'possible_duplicates', 1)
    save_task(KEYS[1], t)
  end
  return 'orphaned'
end
t.provider_task_id = ARGV[2]
if ARGV[3] ~= '' then
  t.poll_locator = ARGV[3]
end
t.holder = nil
t.polls = 0
t.fetch_failures = nil
set_state(KEYS[4], t, 'rendering', now)
save_task(KEYS[1], t)
redis.call('ZREM', KEYS[2], t.id)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), t.id)
return finish(outcome)
