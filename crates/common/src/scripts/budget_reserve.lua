-- budget_reserve.lua: reserve a claimed task's cost ceiling against its season's budget and,
-- for an episode's task, against the season's per-episode cap (step 2 of admission; step 1 is
-- claim.lua in the account's slot).
--
-- KEYS[1]  season budget hash: `cap`, `reserved`, `spent` (micro-USD), `parked`, `need`;
--          `ep_cap` (per-episode cap) and per episode E `ep:E:reserved`, `ep:E:spent`,
--          `ep:E:parked`, `ep:E:need`
-- KEYS[2]  season reservations hash (task id → `<micro-USD>|<episode>`)
-- ARGV[1]  task id
-- ARGV[2]  reservation (micro-USD, integer text)
-- ARGV[3]  the task's episode; '' for a season-wide task (character sheets), which only the
--          season's cap holds
--
-- Idempotent per task: a task that already holds a reservation (a claim retried after a crash
-- or a lease that expired) keeps it and is admitted. Without a cap everything fits (spend is
-- still tracked). When the reservation does not fit, or the season (episode) is already
-- parked, nothing is reserved, the season (episode) is marked parked with reason `budget`
-- (`episode_budget`) and `need` keeps the amount that did not fit, so budget_settle.lua can
-- resume it once that much is free again. The caller gives the task back and parks the
-- season's (episode's) deliveries in its accounts' `parked` sets.
-- Returns 1 (reserved), 0 (the season does not fit: parked), 2 (the episode does not fit).
-- Amounts go to HINCRBY as the integer text they came in as: Redis turns a Lua number into
-- text in its shortest form, which for round values (2e8 micro-USD is $200) is exponent
-- notation that HINCRBY refuses.

if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 1
end
local amount = tonumber(ARGV[2])
local ep = ARGV[3]
local h = redis.call('HMGET', KEYS[1], 'cap', 'reserved', 'spent', 'parked', 'ep_cap')
local cap = tonumber(h[1])
if cap then
  local used = tonumber(h[2] or '0') + tonumber(h[3] or '0')
  if h[4] or used + amount > cap then
    redis.call('HSET', KEYS[1], 'parked', 'budget', 'need', ARGV[2])
    return 0
  end
end
local ep_cap = tonumber(h[5])
if ep ~= '' and ep_cap then
  local p = 'ep:' .. ep .. ':'
  local e = redis.call('HMGET', KEYS[1], p .. 'reserved', p .. 'spent', p .. 'parked')
  local used = tonumber(e[1] or '0') + tonumber(e[2] or '0')
  if e[3] or used + amount > ep_cap then
    redis.call('HSET', KEYS[1], p .. 'parked', 'episode_budget', p .. 'need', ARGV[2])
    return 2
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. ep)
if amount ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2])
  if ep ~= '' then
    redis.call('HINCRBY', KEYS[1], 'ep:' .. ep .. ':reserved', ARGV[2])
  end
end
return 1
