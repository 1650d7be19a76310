-- complete.lua: outputs are in storage with their checksums; the tasks are done.
--
-- KEYS[1]      leases zset
-- KEYS[2]      counts hash
-- KEYS[3]      notify zset (outbox of stored tasks whose dependents must be told)
-- KEYS[4]      render slots zset (a synchronous task's slot is released here)
-- KEYS[3+2i]   task record of task i            (i = 1..n; all of one account)
-- KEYS[4+2i]   dependents set of task i
-- ARGV[4i-3..4i]  for task i: fencing token, output location, sha256 hex, size in bytes
--
-- Stored before done (invariant 7): the caller has already renamed each file into place. A task
-- with dependents enters the notify outbox in the same step, so a crash before they are told
-- cannot strand them. Coalesced like mark_submitting.lua.
-- Returns, per task: 2 stored and has dependents to tell, 1 stored, 0 no longer held.

local now = now_ms()
local out = {}
local released = {}
local outbox = {}
local n = (#KEYS - 4) / 2
for i = 1, n do
  local key = KEYS[3 + 2 * i]
  local rdeps = KEYS[4 + 2 * i]
  local a = 4 * (i - 1)
  local t = load_task(key)
  if t == nil or tostring(t.fence) ~= ARGV[a + 1]
      or (t.state ~= 'claimed' and t.state ~= 'submitting' and t.state ~= 'downloading') then
    out[i] = 0
  else
    t.output = ARGV[a + 2]
    t.sha256 = ARGV[a + 3]
    t.bytes = tonumber(ARGV[a + 4])
    t.holder = nil
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
