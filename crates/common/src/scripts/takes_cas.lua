-- takes_cas.lua: compare-and-set fields of a season's takes hash (re-roll, select, approve,
-- enqueue's registration of scenes and episodes).
--
-- KEYS[1]  dq:{season:<s>}:takes (HASH)
-- ARGV[1]  n, the number of fields
-- then n triples: field, expected, new
--   expected: '-' when the field must be absent, '=' .. value when it must hold value
--   new:      '=' .. value to set it, or '?' to only compare it (a field the decision was
--             made from); takes are never deleted
--
-- The Rust side (`takes.rs`) reads the fields, decides the new values and calls this; two
-- operators acting on the same scene at once cannot both win: the loser sees the field changed
-- and decides again. Returns 0 when every field was set, else the 1-based index of the first
-- field whose value was not the expected one (nothing is written then).

local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local field = ARGV[2 + i * 3]
  local expected = ARGV[3 + i * 3]
  local cur = redis.call('HGET', KEYS[1], field)
  if expected == '-' then
    if cur then
      return i + 1
    end
  elseif (not cur) or ('=' .. cur) ~= expected then
    return i + 1
  end
end
for i = 0, n - 1 do
  local field = ARGV[2 + i * 3]
  local new = ARGV[4 + i * 3]
  if new ~= '?' then
    if string.sub(new, 1, 1) ~= '=' then
      return redis.error_reply('takes_cas: new value of ' .. field .. ' must be ? or start with =')
    end
    redis.call('HSET', KEYS[1], field, string.sub(new, 2))
  end
end
return 0
