-- ops_retarget_dep.lua: point one dependent's dependency entry at the account a task moved to.
--
-- KEYS[1]  record of a task that depends on the moved task (in the dependent's account)
-- ARGV[1]  id of the moved task
-- ARGV[2]  account the moved task lives in now
--
-- Workers read a dependency's output through the dependent's `deps` entry (id and account), so a
-- moved dependency must be renamed there. `deps` lives in the record body, which other scripts
-- carry along undecoded; this one unpacks the body, rewrites matching entries and keeps the
-- header bytes as they are. Idempotent. Returns 1 when rewritten, 0 when nothing changed.

local raw = redis.call('GET', KEYS[1])
if not raw then
  return 0
end
local hi, lo = string.byte(raw, 1, 2)
local hlen = hi * 256 + lo
local head = string.sub(raw, 1, 2 + hlen)
local body_raw = string.sub(raw, 3 + hlen)
if body_raw == '' then
  return 0
end
local body = cmsgpack.unpack(body_raw)
if type(body) ~= 'table' or type(body.deps) ~= 'table' then
  return 0
end
local changed = 0
for _, d in ipairs(body.deps) do
  if type(d) == 'table' and d.id == ARGV[1] and d.account ~= ARGV[2] then
    d.account = ARGV[2]
    changed = 1
  end
end
if changed == 1 then
  redis.call('SET', KEYS[1], head .. cmsgpack.pack(body))
end
return changed
