-- prelude.lua: helpers prepended to every dramaq transition script (it touches no key itself).
--
-- Time comes from Redis TIME so every host agrees (design-notes invariant 9). A task record is
-- one MessagePack string decoded and re-encoded with cmsgpack; the Rust side never writes empty
-- arrays or integers past 2^53, so the round trip is lossless. Every state change goes through set_state,
-- which keeps the per-account "<season>|<state>" counters in step: status and gauges read those
-- counters instead of scanning.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function load_task(key)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  return cmsgpack.unpack(raw)
end

local function save_task(key, t)
  redis.call('SET', key, cmsgpack.pack(t))
end

local function set_state(counts_key, t, state, now)
  if t.state ~= nil then
    redis.call('HINCRBY', counts_key, t.season .. '|' .. t.state, -1)
  end
  redis.call('HINCRBY', counts_key, t.season .. '|' .. state, 1)
  t.state = state
  t.updated_ms = now
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
  local e = { attempt = t.attempt, class = class, message = message, at_ms = now, account = t.account }
  if code ~= nil and code ~= '' then
    e.code = code
  end
  table.insert(t.errors, e)
end
