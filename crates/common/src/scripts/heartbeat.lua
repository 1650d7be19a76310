-- heartbeat.lua: extend the leases a worker still holds; report the ones it lost.
--
-- KEYS[1]  leases zset
-- KEYS[1+i]  task record key i
-- ARGV[1]  worker id
-- ARGV[2]  lease length (ms)
-- ARGV[2+i]  fencing token the worker holds for task i
--
-- A lease is extended only while the record still names this worker and token: a worker that
-- paused past its lease and was replaced must not keep its successor's lease alive.
-- Returns, per task: 1 extended, 0 lost.

local now = now_ms()
local out = {}
for i = 1, #KEYS - 1 do
  local t = load_task(KEYS[1 + i])
  if t ~= nil and t.holder == ARGV[1] and tostring(t.fence) == ARGV[2 + i]
      and redis.call('ZSCORE', KEYS[1], t.id) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), t.id)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
