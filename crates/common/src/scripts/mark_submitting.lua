-- mark_submitting.lua: record an attempt before the HTTP submit (never pay twice).
--
-- KEYS[1]  task record
-- KEYS[2]  counts hash
-- ARGV[1]  fencing token
--
-- After this the reaper knows a provider may have the work; a crash between here and
-- mark_accepted.lua is the only window that can produce a duplicate render, and it is counted.
-- Returns the attempt number, or an error "FENCED" when the caller no longer holds the task.

local t = load_task(KEYS[1])
if t == nil or t.state ~= 'claimed' or tostring(t.fence) ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
local now = now_ms()
t.attempt = (t.attempt or 0) + 1
t.submitted_ms = now
set_state(KEYS[2], t, 'submitting', now)
save_task(KEYS[1], t)
return t.attempt
