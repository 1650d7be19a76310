-- poll_now.lua: a provider called back that a render finished; poll it now.
--
-- KEYS[1]  await zset
-- KEYS[2]  task record
-- KEYS[3]  hooked zset (renders whose finish was announced: duplicates are ignored)
-- ARGV[1]  task id
-- ARGV[2]  provider task id the callback was about
-- ARGV[3]  forget announcements older than this (ms)
--
-- A callback decides nothing: it only moves the render's next poll to now, and the poll finds
-- out what happened. So a forged or replayed callback costs at most one early poll, and only
-- for a render that is really awaited under that provider task id.
-- Returns 'moved', 'duplicate' (already announced), or 'unknown' (no such awaited render).

local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[3]))
local t = load_task(KEYS[2])
if t == nil or t.state ~= 'rendering' or t.provider_task_id ~= ARGV[2]
    or not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 'unknown'
end
if redis.call('ZADD', KEYS[3], 'NX', now, ARGV[1]) == 0 then
  return 'duplicate'
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return 'moved'
