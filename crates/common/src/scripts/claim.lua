-- claim.lua: turn stream deliveries into leased claims, one fencing token each.
--
-- KEYS[1]  ready stream
-- KEYS[2]  leases zset
-- KEYS[3]  counts hash
-- KEYS[4]  paused flag
-- KEYS[4+i]  task record key of delivery i   (i = 1..n)
-- ARGV[1]  consumer group
-- ARGV[2]  worker id
-- ARGV[3]  lease length (ms)
-- ARGV[3+i]  stream entry id of delivery i
--
-- Each delivered entry is acknowledged and deleted whatever happens: liveness is tracked by the
-- lease, not by the pending-entries list. A delivery whose record is gone, not `ready`, or points
-- at another entry is stale and dropped. While the account is paused a delivery is put back at
-- the end of the stream instead of claimed.
-- Returns, per delivery: {"claimed", record} | {"stale", ""} | {"paused", ""}.

local now = now_ms()
local lease_until = now + tonumber(ARGV[3])
local paused = redis.call('EXISTS', KEYS[4]) == 1
local n = #KEYS - 4
local entries = {}
for i = 1, n do
  entries[i] = ARGV[3 + i]
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
redis.call('XDEL', KEYS[1], unpack(entries))
local out = {}
local leases = {}
for i = 1, n do
  local key = KEYS[4 + i]
  local t = load_task(key)
  if t == nil or t.state ~= 'ready' or t.entry ~= entries[i] then
    out[i] = { 'stale', '' }
  elseif paused then
    push_ready(KEYS[1], t, t.ready_ms or now)
    save_task(key, t)
    out[i] = { 'paused', '' }
  else
    t.fence = (t.fence or 0) + 1
    t.holder = ARGV[2]
    t.entry = nil
    set_state(KEYS[3], t, 'claimed', now)
    leases[#leases + 1] = lease_until
    leases[#leases + 1] = t.id
    local packed = encode_record(t)
    redis.call('SET', key, packed)
    out[i] = { 'claimed', packed }
  end
end
if #leases > 0 then
  redis.call('ZADD', KEYS[2], unpack(leases))
end
return finish(out)
