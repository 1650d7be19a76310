-- enqueue.lua: create a batch of tasks of one account, skipping those that already exist.
--
-- KEYS[1]  ready stream of the account
-- KEYS[2]  counts hash of the account
-- KEYS[3]  waiting index of the account (ZSET id -> ms, audited by the reaper)
-- KEYS[4+2(i-1)]  task record key of task i        (i = 1..n)
-- KEYS[5+2(i-1)]  deps set key of task i
-- ARGV[1]  consumer group name
-- ARGV[2]  n, the number of tasks
-- then per task i, in order: record (MessagePack), p (pending dependency count), p dependency ids
--
-- A task with no pending dependency goes straight onto the ready stream; the others wait with
-- their pending ids in their deps set until dep_done.lua removes the last one, and in the
-- account's waiting index, which lets the reaper find a waiting task whose last notification was
-- lost (reaper/waiting.rs). Existing records
-- are left untouched: ids are content-addressed, so an existing id is the same work.
-- Returns {created, existing}.

local err = ensure_group(KEYS[1], ARGV[1])
if err then
  return err
end
local now = now_ms()
local n = tonumber(ARGV[2])
local cursor = 3
local created, existing = 0, 0
for i = 1, n do
  local task_key = KEYS[4 + 2 * (i - 1)]
  local deps_key = KEYS[5 + 2 * (i - 1)]
  local record = ARGV[cursor]
  local pending = tonumber(ARGV[cursor + 1])
  cursor = cursor + 2
  if redis.call('EXISTS', task_key) == 1 then
    existing = existing + 1
    cursor = cursor + pending
  else
    local t = decode_record(record)
    t.state = nil
    t.created_ms = now
    if pending > 0 then
      for j = 0, pending - 1 do
        redis.call('SADD', deps_key, ARGV[cursor + j])
      end
      set_state(KEYS[2], t, 'waiting', now)
      redis.call('ZADD', KEYS[3], now, t.id)
    else
      push_ready(KEYS[1], t, now)
      set_state(KEYS[2], t, 'ready', now)
    end
    cursor = cursor + pending
    save_task(task_key, t)
    created = created + 1
  end
end
return finish({ created, existing })
