-- render_done.lua: a poll saw the render succeed; the poller takes it under a lease to download.
--
-- KEYS[1]  task record
-- KEYS[2]  await zset
-- KEYS[3]  leases zset
-- KEYS[4]  counts hash
-- KEYS[5]  render slots zset (the provider's render is over: its slot is free)
-- KEYS[6]  render-time histogram hash (bucket -> count, 'n' -> total)
-- KEYS[7]  hooked zset (a callback announced this render: the entry is done with)
-- ARGV[1]  provider task id the poll was about
-- ARGV[2]  result JSON
-- ARGV[3]  worker id
-- ARGV[4]  lease length (ms)
-- ARGV[5]  histogram bucket of this render's time ('' : nothing to learn)
-- ARGV[6]  halve every count of the histogram once its total passes this
--
-- Only the first poller to see success moves the task; a second one finds it `downloading`, and
-- only the first adds its observation to the histogram.
-- Returns the new fencing token, or an error "FENCED".

local t = load_task(KEYS[1])
if t == nil or t.state ~= 'rendering' or t.provider_task_id ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
local now = now_ms()
t.result = ARGV[2]
t.fence = (t.fence or 0) + 1
t.holder = ARGV[3]
set_state(KEYS[4], t, 'downloading', now)
save_task(KEYS[1], t)
redis.call('ZREM', KEYS[2], t.id)
redis.call('ZREM', KEYS[5], t.id)
redis.call('ZREM', KEYS[7], t.id)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), t.id)
if ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[6], ARGV[5], 1)
  if redis.call('HINCRBY', KEYS[6], 'n', 1) > tonumber(ARGV[6]) then
    -- Decay: old renders weigh half, emptied buckets go.
    local all = redis.call('HGETALL', KEYS[6])
    local total = 0
    for i = 1, #all, 2 do
      if all[i] ~= 'n' then
        local half = math.floor(tonumber(all[i + 1]) / 2)
        if half > 0 then
          redis.call('HSET', KEYS[6], all[i], half)
          total = total + half
        else
          redis.call('HDEL', KEYS[6], all[i])
        end
      end
    end
    redis.call('HSET', KEYS[6], 'n', total)
  end
end
return finish(t.fence)
