-- mark_submitting.lua: record attempts before their HTTP submits (never pay twice).
--
-- KEYS[1]    counts hash
-- KEYS[1+i]  task record of task i              (i = 1..n; all of one account)
-- ARGV[i]    fencing token the caller holds for task i
--
-- After this the reaper knows a provider may have the work; a crash between here and
-- mark_accepted.lua is the only window that can produce a duplicate render, and it is counted.
-- Several workers' calls are coalesced into one script run (group commit); each task is checked
-- on its own. Returns, per task, the attempt number, or 0 when the caller no longer holds it.

local now = now_ms()
local out = {}
for i = 1, #KEYS - 1 do
  local key = KEYS[1 + i]
  local t = load_task(key)
  if t == nil or t.state ~= 'claimed' or tostring(t.fence) ~= ARGV[i] then
    out[i] = 0
  else
    t.attempt = (t.attempt or 0) + 1
    t.submitted_ms = now
    set_state(KEYS[1], t, 'submitting', now)
    save_task(key, t)
    out[i] = t.attempt
  end
end
return finish(out)
