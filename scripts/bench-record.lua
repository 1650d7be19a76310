-- bench-record.lua: what one transition's handling of a task record costs inside Redis's Lua,
-- piece by piece (run by scripts/bench-record-lua.sh on a throwaway server; not a product
-- script, so it builds its scratch keys itself).
--
-- KEYS     none (the scratch keys `bench-record:<i>` are made here, on a throwaway server only)
-- ARGV[1]  variant: none | get | getset | msgpack | struct | full | range
-- ARGV[2]  iterations
-- Returns the microseconds the loop took (Redis TIME).
--
-- The record is shaped like a queued task's: a 2-byte header length, the MessagePack header a
-- ready task has (9 fields), and a 412-byte body.

local n = tonumber(ARGV[2])
local variant = ARGV[1]
local hdr = { id = 'voc-0000000000004190', max_attempts = 8, season = 'bench', state = 'ready',
  updated_ms = 1796158498863, created_ms = 1796158498863, ready_ms = 1796158498863,
  entry = '1796158498863-11', account = 'bench' }
local body = string.rep('x', 412)
local packed = cmsgpack.pack(hdr)
local record = string.char(math.floor(#packed / 256), #packed % 256) .. packed .. body
local keys = {}
for i = 1, 2000 do
  keys[i] = 'bench-record:' .. i
  redis.call('SET', keys[i], record)
end
-- The same header as a fixed layout for the `struct` library: length-prefixed strings, then
-- doubles for the times and integers for the counters.
local layout = '>Bc0Bc0Bc0Bc0Bc0dddHI'
local fixed = struct.pack(layout, #hdr.id, hdr.id, #hdr.season, hdr.season, #hdr.state,
  hdr.state, #hdr.entry, hdr.entry, #hdr.account, hdr.account, hdr.updated_ms, hdr.created_ms,
  hdr.ready_ms, hdr.max_attempts, 0)

local function claim_fields(t, j)
  t.state = 'claimed'
  t.fence = j
  t.updated_ms = 1796158498900 + j
end

local t0 = redis.call('TIME')
for j = 1, n do
  local key = keys[j % 2000 + 1]
  if variant == 'get' then
    redis.call('GET', key)
  elseif variant == 'getset' then
    redis.call('SET', key, redis.call('GET', key))
  elseif variant == 'msgpack' then
    local t = cmsgpack.unpack(packed)
    claim_fields(t, j)
    cmsgpack.pack(t)
  elseif variant == 'struct' then
    local id, season, state, entry, account, um, cm, rm, ma, fence = struct.unpack(layout, fixed)
    local t = { id = id, season = season, state = state, entry = entry, account = account,
      updated_ms = um, created_ms = cm, ready_ms = rm, max_attempts = ma, fence = fence }
    claim_fields(t, j)
    struct.pack(layout, #t.id, t.id, #t.season, t.season, #t.state, t.state, #t.entry, t.entry,
      #t.account, t.account, t.updated_ms, t.created_ms, t.ready_ms, t.max_attempts, t.fence)
  elseif variant == 'full' then
    -- What load_task/save_task do today.
    local raw = redis.call('GET', key)
    local hi, lo = string.byte(raw, 1, 2)
    local hlen = hi * 256 + lo
    local t = cmsgpack.unpack(string.sub(raw, 3, 2 + hlen))
    local b = string.sub(raw, 3 + hlen)
    claim_fields(t, j)
    local h = cmsgpack.pack(t)
    redis.call('SET', key, string.char(math.floor(#h / 256), #h % 256) .. h .. b)
  elseif variant == 'range' then
    -- The header alone read and rewritten in place; the body never enters Lua. (Measures the
    -- cost only: a header that changed length would need room reserved after it.)
    local hi, lo = string.byte(redis.call('GETRANGE', key, 0, 1), 1, 2)
    local hlen = hi * 256 + lo
    local t = cmsgpack.unpack(redis.call('GETRANGE', key, 2, 1 + hlen))
    claim_fields(t, j)
    local h = cmsgpack.pack(t)
    redis.call('SETRANGE', key, 0, string.char(math.floor(#h / 256), #h % 256) .. h)
  end
end
local t1 = redis.call('TIME')
return (t1[1] - t0[1]) * 1000000 + (t1[2] - t0[2])
