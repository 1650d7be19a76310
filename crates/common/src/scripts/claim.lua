-- claim.lua: turn stream deliveries into leased claims, one fencing token each, within the
-- account's quota, picking the API key of the account's pool each claim will use.
--
-- KEYS[1]  ready stream
-- KEYS[2]  leases zset
-- KEYS[3]  counts hash
-- KEYS[4]  account paused flag (an operator's pause: nothing is claimed)
-- KEYS[5]  render slots zset      KEYS[6]  slot owners hash (slot → pool key name)
-- KEYS[7]  parked set (over budget): seasons, and `<season>/<episode>` for an episode over its
--          per-episode cap
-- KEYS[8 .. 7+4m]  per pool key j: paused flag, cooldown flag, GCRA state, daily counts hash
-- KEYS[7+4m+i]  task record key of delivery i   (i = 1..n)
-- ARGV[1]  consumer group
-- ARGV[2]  worker id
-- ARGV[3]  lease length (ms)
-- ARGV[4]  render slot lease (ms)
-- ARGV[5]  m, the number of pool keys (1 for an account without a pool)
-- ARGV[6 .. 5+5m]  per pool key j: name ('' for the unnamed key of an account without a
--          pool), GCRA interval (µs), GCRA tolerance (µs), max concurrent renders, daily cap
--          — 0 means unlimited
-- ARGV[5+5m+i]  stream entry id of delivery i
--
-- Each delivered entry is acknowledged and deleted whatever happens: liveness is tracked by the
-- lease, not by the pending-entries list. A delivery whose record is gone, not `ready`, or points
-- at another entry is stale and dropped. The quota is checked here, in the same step as the
-- claim, so a task never holds a worker while it waits for capacity: a delivery that does not fit
-- (account or every key paused, its season parked over budget, no key with room: cooling down
-- after a 429, at its daily cap, out of render slots, over its rate) goes back to the end of the
-- stream and the caller is told how long to wait. A claimed record names its key (`key`), so
-- every later request about its render uses that key.
-- Returns, per delivery: {"claimed", record} | {"stale", ""} | {"paused", ""} |
-- {"parked", "<season>" or "<season>/<episode>"} | {"throttled", "<wait ms>:<reason>"}.
-- The episode is in the record's body, which is decoded only for a season with a parked episode.

local now = now_ms()
local now_u = now_us()
local lease_until = now + tonumber(ARGV[3])
local slot_ms = tonumber(ARGV[4])
local m = tonumber(ARGV[5])
local paused = redis.call('EXISTS', KEYS[4]) == 1
local pool = pool_load(m, 8, 6, KEYS[5], KEYS[6], now)
local rk = 7 + 4 * m
local ra = 5 + 5 * m
local n = #KEYS - rk
local entries = {}
for i = 1, n do
  entries[i] = ARGV[ra + i]
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
redis.call('XDEL', KEYS[1], unpack(entries))
-- The parked set is small (a few seasons and episodes): read it once. `has_parked_episode`
-- says which seasons have a parked episode, so only their tasks' bodies are decoded.
local parked = {}
local has_parked_episode = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  parked[member] = true
  local season = string.match(member, '^(.*)/[^/]*$')
  if season then
    has_parked_episode[season] = true
  end
end
-- The parked set member that holds task t back, or nil.
local function parked_by(t)
  if parked[t.season] then
    return t.season
  end
  if not has_parked_episode[t.season] or t._body == nil or t._body == '' then
    return nil
  end
  local body = cmsgpack.unpack(t._body)
  if type(body) ~= 'table' or type(body.group) ~= 'string' then
    return nil
  end
  local member = t.season .. '/' .. body.group
  if parked[member] then
    return member
  end
  return nil
end
local out = {}
local leases = {}
for i = 1, n do
  local key = KEYS[rk + i]
  local t = load_task(key)
  if t == nil or t.state ~= 'ready' or t.entry ~= entries[i] then
    out[i] = { 'stale', '' }
  else
    local held_by = nil
    if not paused then
      held_by = parked_by(t)
    end
    local k, wait, why = nil, -1, 'paused'
    if not paused and not held_by then
      k, wait, why = pool_pick(pool, now, now_u)
    end
    if k == nil then
      push_ready(KEYS[1], t, t.ready_ms or now)
      save_task(key, t)
      if held_by then
        out[i] = { 'parked', held_by }
      elseif wait < 0 then
        out[i] = { 'paused', '' }
      else
        out[i] = { 'throttled', wait .. ':' .. why }
      end
    else
      pool_take(k, m, KEYS[5], KEYS[6], now, now_u, slot_ms, t.id)
      t.fence = (t.fence or 0) + 1
      t.holder = ARGV[2]
      t.entry = nil
      if k.name ~= '' then
        t.key = k.name
      else
        t.key = nil
      end
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
