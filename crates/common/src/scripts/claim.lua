-- claim.lua: turn stream deliveries into leased claims, one fencing token each, within the
-- account's quota.
--
-- KEYS[1]  ready stream
-- KEYS[2]  leases zset
-- KEYS[3]  counts hash
-- KEYS[4]  paused flag
-- KEYS[5]  cooldown flag          KEYS[6]  GCRA state
-- KEYS[7]  render slots zset      KEYS[8]  daily counts hash
-- KEYS[8+i]  task record key of delivery i   (i = 1..n)
-- ARGV[1]  consumer group
-- ARGV[2]  worker id
-- ARGV[3]  lease length (ms)
-- ARGV[4..8]  quota: GCRA interval (µs), GCRA tolerance (µs), max concurrent renders, render
--          slot lease (ms), daily cap — 0 means unlimited
-- ARGV[8+i]  stream entry id of delivery i
--
-- Each delivered entry is acknowledged and deleted whatever happens: liveness is tracked by the
-- lease, not by the pending-entries list. A delivery whose record is gone, not `ready`, or points
-- at another entry is stale and dropped. The quota is checked here, in the same step as the
-- claim, so a task never holds a worker while it waits for capacity: a delivery that does not fit
-- (account paused, cooling down after a 429, at its daily cap, out of render slots, over its
-- rate) goes back to the end of the stream and the caller is told how long to wait.
-- Returns, per delivery: {"claimed", record} | {"stale", ""} | {"paused", ""} |
-- {"throttled", "<wait ms>:<reason>"}.

local now = now_ms()
local now_u = now_us()
local lease_until = now + tonumber(ARGV[3])
local paused = redis.call('EXISTS', KEYS[4]) == 1
local q = parse_quota(ARGV, 4)
local qkeys = { cooldown = KEYS[5], gcra = KEYS[6], slots = KEYS[7], daily = KEYS[8] }
local n = #KEYS - 8
local entries = {}
for i = 1, n do
  entries[i] = ARGV[8 + i]
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
redis.call('XDEL', KEYS[1], unpack(entries))
local out = {}
local leases = {}
for i = 1, n do
  local key = KEYS[8 + i]
  local t = load_task(key)
  if t == nil or t.state ~= 'ready' or t.entry ~= entries[i] then
    out[i] = { 'stale', '' }
  elseif paused then
    push_ready(KEYS[1], t, t.ready_ms or now)
    save_task(key, t)
    out[i] = { 'paused', '' }
  else
    local wait, reason = quota_wait_ms(qkeys, q, now, now_u)
    if wait > 0 then
      push_ready(KEYS[1], t, t.ready_ms or now)
      save_task(key, t)
      out[i] = { 'throttled', wait .. ':' .. reason }
    else
      quota_take(qkeys, q, now, now_u, t.id)
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
end
if #leases > 0 then
  redis.call('ZADD', KEYS[2], unpack(leases))
end
return finish(out)
