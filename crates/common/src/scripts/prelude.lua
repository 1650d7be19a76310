-- prelude.lua: helpers prepended to every dramaq transition script (it touches no key itself).
--
-- Time comes from Redis TIME so every host agrees (docs/invariants.md, "Time comes from Redis"). The Rust side never
-- writes empty arrays or integers past 2^53, so a cmsgpack round trip is lossless. Every state change goes through set_state,
-- which keeps the per-account "<season>|<state>" counters in step: status and gauges read those
-- counters instead of scanning.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A record is [2-byte header length][header][body]: the header (MessagePack) holds what
-- transitions read and change; the body (MessagePack: payload, dependencies, labels) is never
-- decoded here, only carried along. Hot transitions thus unpack ~150 bytes, not the whole task.
local function decode_record(raw)
  local hi, lo = string.byte(raw, 1, 2)
  local hlen = hi * 256 + lo
  local t = cmsgpack.unpack(string.sub(raw, 3, 2 + hlen))
  t._body = string.sub(raw, 3 + hlen)
  return t
end

local function encode_record(t)
  local body = t._body
  t._body = nil
  local h = cmsgpack.pack(t)
  t._body = body
  local n = #h
  return string.char(math.floor(n / 256), n % 256) .. h .. body
end

local function load_task(key)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  return decode_record(raw)
end

local function save_task(key, t)
  redis.call('SET', key, encode_record(t))
end

-- State counters change in memory and are written once per script run by finish(): a batch of
-- 64 claims then costs two HINCRBYs, not 128 (each redis.call costs more than the Lua around it).
local count_deltas = {}

local function set_state(counts_key, t, state, now)
  local deltas = count_deltas[counts_key]
  if deltas == nil then
    deltas = {}
    count_deltas[counts_key] = deltas
  end
  if t.state ~= nil then
    local from = t.season .. '|' .. t.state
    deltas[from] = (deltas[from] or 0) - 1
  end
  local to = t.season .. '|' .. state
  deltas[to] = (deltas[to] or 0) + 1
  t.state = state
  t.updated_ms = now
end

-- Every script returns through finish() once it may have changed a state.
local function finish(result)
  for key, deltas in pairs(count_deltas) do
    for field, delta in pairs(deltas) do
      if delta ~= 0 then
        redis.call('HINCRBY', key, field, delta)
      end
    end
  end
  count_deltas = {}
  return result
end

-- A stream entry whose only field is the task id; the record remembers it so a stale entry
-- (the task moved on while the entry waited) is recognised and dropped at claim time.
local function push_ready(ready_key, t, now)
  t.entry = redis.call('XADD', ready_key, '*', 'id', t.id)
  t.ready_ms = now
end

local function ensure_group(ready_key, group)
  local ok = redis.pcall('XGROUP', 'CREATE', ready_key, group, '0', 'MKSTREAM')
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP') then
    return redis.error_reply(ok.err)
  end
end

local function append_error(t, class, code, message, now)
  if t.errors == nil or next(t.errors) == nil then
    t.errors = {}
  end
  local e = { attempt = t.attempt or 0, class = class, message = message, at_ms = now, account = t.account }
  if code ~= nil and code ~= '' then
    e.code = code
  end
  table.insert(t.errors, e)
end

-- Quota helpers (docs/invariants.md, "Quotas hold across the fleet"). `q` is the account's quota as passed by the caller:
-- { interval_us, tolerance_us, max_concurrent, slot_ms, daily_cap } with 0 = unlimited. Each
-- returns 0 when a submit may proceed now, else how many ms until it might.

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- GCRA: a submit conforms when the theoretical arrival time is at most `tolerance` ahead of now.
local function gcra_wait_ms(gcra_key, q, now_u)
  if q.interval_us <= 0 then
    return 0
  end
  local tat = tonumber(redis.call('GET', gcra_key) or '0')
  if tat < now_u then
    tat = now_u
  end
  local ahead = tat - now_u
  if ahead > q.tolerance_us then
    return math.ceil((ahead - q.tolerance_us) / 1000)
  end
  return 0
end

local function gcra_take(gcra_key, q, now_u)
  if q.interval_us <= 0 then
    return
  end
  local tat = tonumber(redis.call('GET', gcra_key) or '0')
  if tat < now_u then
    tat = now_u
  end
  local new_tat = tat + q.interval_us
  -- The key lives as long as it matters: past the new arrival time it equals "now".
  redis.call('SET', gcra_key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now_u) / 1000) + 1000)
end

local function daily_wait_ms(daily_key, q, now)
  if q.daily_cap <= 0 then
    return 0
  end
  local day = math.floor(now / 86400000)
  local used = tonumber(redis.call('HGET', daily_key, tostring(day)) or '0')
  if used < q.daily_cap then
    return 0
  end
  return (day + 1) * 86400000 - now
end

local function cooldown_wait_ms(cooldown_key)
  local ttl = redis.call('PTTL', cooldown_key)
  if ttl > 0 then
    return ttl
  end
  return 0
end

local function parse_quota(argv, at)
  return {
    interval_us = tonumber(argv[at]),
    tolerance_us = tonumber(argv[at + 1]),
    max_concurrent = tonumber(argv[at + 2]),
    slot_ms = tonumber(argv[at + 3]),
    daily_cap = tonumber(argv[at + 4]),
  }
end

-- Key pools (ARCHITECTURE.md, "Key pools"). An account's keys each have their own quota state;
-- the pool is passed as 4 KEYS per key (paused, cooldown, GCRA, daily) starting at `kb` and 5
-- ARGV per key (name, GCRA interval µs, tolerance µs, max concurrent, daily cap) starting at
-- `ab`. Render slots share the account's slots zset; with more than one key the owners hash
-- tells whose slot each is (owners whose slot is gone are dropped here).
local function pool_load(m, kb, ab, slots_key, owners_key, now)
  local pool = {}
  local any_slots = false
  for j = 1, m do
    local k0 = kb + (j - 1) * 4
    local a0 = ab + (j - 1) * 5
    local k = {
      name = ARGV[a0],
      q = parse_quota({ ARGV[a0 + 1], ARGV[a0 + 2], ARGV[a0 + 3], '0', ARGV[a0 + 4] }, 1),
      keys = { cooldown = KEYS[k0 + 1], gcra = KEYS[k0 + 2], daily = KEYS[k0 + 3] },
      paused = redis.call('EXISTS', KEYS[k0]) == 1,
      in_use = 0,
    }
    if k.q.max_concurrent > 0 then
      any_slots = true
    end
    pool[j] = k
  end
  if any_slots then
    redis.call('ZREMRANGEBYSCORE', slots_key, '-inf', now)
    if m == 1 then
      pool[1].in_use = redis.call('ZCARD', slots_key)
    else
      local held = {}
      for _, id in ipairs(redis.call('ZRANGE', slots_key, 0, -1)) do
        held[id] = true
      end
      local by_name = {}
      for _, k in ipairs(pool) do
        by_name[k.name] = k
      end
      local owners = redis.call('HGETALL', owners_key)
      local gone = {}
      for i = 1, #owners, 2 do
        local k = by_name[owners[i + 1]]
        if not held[owners[i]] then
          gone[#gone + 1] = owners[i]
        elseif k then
          k.in_use = k.in_use + 1
        end
      end
      if #gone > 0 then
        redis.call('HDEL', owners_key, unpack(gone))
      end
    end
  end
  return pool
end

-- How long until pool key `k` may take a submit (0 = now) and why not.
local function pool_key_wait(k, now, now_u)
  local w = cooldown_wait_ms(k.keys.cooldown)
  if w > 0 then return w, 'cooldown' end
  w = daily_wait_ms(k.keys.daily, k.q, now)
  if w > 0 then return w, 'daily_cap' end
  if k.q.max_concurrent > 0 and k.in_use >= k.q.max_concurrent then
    -- Short: a slot another process frees is claimed within this wait (a worker's own frees
    -- wake its fetchers at once), and each idle slot-wait is a paid slot left empty.
    return 100, 'concurrency'
  end
  w = gcra_wait_ms(k.keys.gcra, k.q, now_u)
  if w > 0 then return w, 'rate' end
  return 0, nil
end

-- The key a submit should use now: among keys with room, the one with the most free render
-- slots (as a share of its limit), then the one whose rate was used least recently, so no key
-- idles while another is at its limit. Returns the key, or nil with the shortest wait and its
-- reason ('paused' with -1 when every key is paused).
local function pool_pick(pool, now, now_u)
  local best, best_free, best_tat = nil, -1, 0
  local wait, why = -1, 'paused'
  for _, k in ipairs(pool) do
    if not k.paused then
      local w, reason = pool_key_wait(k, now, now_u)
      if w == 0 then
        local free = 1
        if k.q.max_concurrent > 0 then
          free = (k.q.max_concurrent - k.in_use) / k.q.max_concurrent
        end
        local tat = 0
        if k.q.interval_us > 0 then
          tat = (tonumber(redis.call('GET', k.keys.gcra) or '0') - now_u) / k.q.interval_us
        end
        if best == nil or free > best_free or (free == best_free and tat < best_tat) then
          best, best_free, best_tat = k, free, tat
        end
      elseif wait < 0 or w < wait then
        wait, why = w, reason
      end
    end
  end
  return best, wait, why
end

local function pool_take(k, m, slots_key, owners_key, now, now_u, slot_ms, id)
  gcra_take(k.keys.gcra, k.q, now_u)
  if k.q.max_concurrent > 0 then
    redis.call('ZADD', slots_key, now + slot_ms, id)
    k.in_use = k.in_use + 1
    if m > 1 then
      redis.call('HSET', owners_key, id, k.name)
    end
  end
  if k.q.daily_cap > 0 then
    local day = math.floor(now / 86400000)
    redis.call('HINCRBY', k.keys.daily, tostring(day), 1)
    redis.call('HDEL', k.keys.daily, tostring(day - 2))
  end
end
