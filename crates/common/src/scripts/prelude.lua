-- prelude.lua: helpers prepended to every dramaq transition script (it touches no key itself).
--
-- Time comes from Redis TIME so every host agrees (design-notes invariant 9). The Rust side never
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
  local e = { attempt = t.attempt, class = class, message = message, at_ms = now, account = t.account }
  if code ~= nil and code ~= '' then
    e.code = code
  end
  table.insert(t.errors, e)
end
