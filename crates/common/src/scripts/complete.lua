-- complete.lua: outputs are in storage with their checksums; the tasks are done.
--
-- KEYS[1]      leases zset
-- KEYS[2]      counts hash
-- KEYS[3]      notify zset (outbox of stored tasks whose dependents must be told)
-- KEYS[4]      render slots zset (a synchronous task's slot is released here)
-- KEYS[5]      await zset
-- KEYS[6]      delayed zset
-- KEYS[7]      stats hash
-- KEYS[6+2i]   task record of task i            (i = 1..n; all of one account)
-- KEYS[7+2i]   dependents set of task i
-- ARGV[6i-5..6i]  for task i: fencing token, output location, sha256 hex, size in bytes,
--                 '1' when the caller paid for this output itself (a synchronous submit's
--                 answer) or '0' for the download of a render the record already knows, and the
--                 caller's completion id (worker id and sequence number, kept as `done_by`)
--
-- Stored before done (invariant 7): the caller has already put each output into place. A task
-- with dependents enters the notify outbox in the same step, so a crash before they are told
-- cannot strand them. Coalesced like mark_submitting.lua.
--
-- The output is in storage, so it is recorded whenever the task still wants one and nobody has
-- claimed it since the caller did (the record's fencing token is not newer than the caller's):
-- under the caller's token as usual, or when the record went back in time (Redis lost writes:
-- its token is older than the caller's) or was taken back without a new claim (`ready`,
-- `delayed`, `rendering` after the reaper's repoll). A newer token means another holder took
-- over: refused, as fencing demands; so is a task stored, dead, moving, waiting or gone. If the
-- caller paid for a refused output, the record is flagged `possible_duplicate` (counted once).
-- A task already stored by this very caller (same worker, token, output and checksum) answers 1
-- and nothing changes, so the call can be replayed (`crates/worker/src/journal.rs`). Stored by
-- anyone else, even with identical bytes, it is a refusal: two claims paid for it.
-- Returns, per task: 2 stored and has dependents to tell, 1 stored, 0 refused.

local now = now_ms()
local out = {}
local released = {}
local outbox = {}
local wants = { claimed = true, submitting = true, downloading = true, ready = true,
  delayed = true, rendering = true }
local n = (#KEYS - 7) / 2
for i = 1, n do
  local key = KEYS[6 + 2 * i]
  local rdeps = KEYS[7 + 2 * i]
  local a = 6 * (i - 1)
  local t = load_task(key)
  if t ~= nil and t.state == 'stored' and t.done_by == ARGV[a + 6]
      and tostring(t.fence) == ARGV[a + 1] and t.sha256 == ARGV[a + 3] then
    -- Already recorded with this very output (a replay after a Redis restart): nothing to do.
    out[i] = 1
  elseif t == nil or not wants[t.state] or (t.fence or 0) > tonumber(ARGV[a + 1]) then
    out[i] = 0
    if ARGV[a + 5] == '1' then
      redis.call('HINCRBY', KEYS[7], 'orphaned_renders', 1)
      if t ~= nil and not t.possible_duplicate then
        t.possible_duplicate = true
        redis.call('HINCRBY', KEYS[7], 'possible_duplicates', 1)
        save_task(key, t)
      end
    end
  else
    if tostring(t.fence) ~= ARGV[a + 1] or t.state == 'ready' or t.state == 'delayed'
        or t.state == 'rendering' then
      redis.call('HINCRBY', KEYS[7], 'adopted_late', 1)
      redis.call('ZREM', KEYS[5], t.id)
      redis.call('ZREM', KEYS[6], t.id)
    end
    t.output = ARGV[a + 2]
    t.sha256 = ARGV[a + 3]
    t.bytes = tonumber(ARGV[a + 4])
    t.holder = nil
    t.done_by = ARGV[a + 6]
    t.done_ms = now
    set_state(KEYS[2], t, 'stored', now)
    save_task(key, t)
    released[#released + 1] = t.id
    if redis.call('EXISTS', rdeps) == 1 then
      outbox[#outbox + 1] = now
      outbox[#outbox + 1] = t.id
      out[i] = 2
    else
      out[i] = 1
    end
  end
end
if #released > 0 then
  redis.call('ZREM', KEYS[1], unpack(released))
  redis.call('ZREM', KEYS[4], unpack(released))
end
if #outbox > 0 then
  redis.call('ZADD', KEYS[3], unpack(outbox))
end
return finish(out)
