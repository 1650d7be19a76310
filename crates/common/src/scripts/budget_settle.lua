-- budget_settle.lua: settle (or release) a task's reservation with what the attempt cost.
--
-- KEYS[1]  season budget hash
-- KEYS[2]  season reservations hash
-- KEYS[3]  season spend ledger (`<id>#<attempt>` → JSON spend record)
-- ARGV[1]  task id
-- ARGV[2]  ledger field `<id>#<attempt>`, '' for a release (given back: nothing was spent)
-- ARGV[3]  actual cost (micro-USD, integer)
-- ARGV[4]  spend record (JSON: usd, group, kind, account, key) for the ledger
--
-- The reservation is dropped and the actual cost added to `spent` once per attempt: a settle
-- repeated (a replayed completion) finds the ledger entry and changes nothing.
-- Returns the micro-USD added to `spent`.

local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  redis.call('HDEL', KEYS[2], ARGV[1])
  -- Negated as text: a Lua number would reach Redis as '-0' for a free task and in exponent
  -- notation for round amounts (2e8 micro-USD), both of which HINCRBY refuses.
  if tonumber(held) ~= 0 then
    redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. held)
  end
end
local actual = tonumber(ARGV[3])
if ARGV[2] == '' or actual <= 0 then
  return 0
end
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[4]) == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[3])
return actual
