-- budget_reserve.lua: reserve a claimed task's estimated cost against its season's budget
-- (step 2 of admission; step 1 is claim.lua in the account's slot).
--
-- KEYS[1]  season budget hash (`cap`, `reserved`, `spent` in micro-USD; `parked`)
-- KEYS[2]  season reservations hash (task id → micro-USD)
-- ARGV[1]  task id
-- ARGV[2]  estimated cost (micro-USD, integer)
--
-- Idempotent per task: a task that already holds a reservation (a claim retried after a crash)
-- keeps it and is admitted. Without a `cap` everything fits (spend is still tracked). When the
-- estimate does not fit — or the season is already parked — nothing is reserved and the season
-- is marked `parked` = `budget`; the caller gives the task back and parks the season's accounts.
-- Returns 1 (reserved) or 0 (does not fit: parked). Amounts are passed to HINCRBY as the integer
-- text they came in as (see the end of this script).

if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 1
end
local amount = tonumber(ARGV[2])
local cap = redis.call('HGET', KEYS[1], 'cap')
if cap then
  local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
  local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
  if redis.call('HEXISTS', KEYS[1], 'parked') == 1 or reserved + spent + amount > tonumber(cap) then
    redis.call('HSET', KEYS[1], 'parked', 'budget')
    return 0
  end
end
-- ARGV[2] itself, never the Lua number: Redis turns a Lua number into text in its shortest form,
-- which for round values (2e8 micro-USD is $200) is exponent notation that HINCRBY refuses.
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if amount ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2])
end
return 1
