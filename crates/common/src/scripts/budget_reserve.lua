-- budget_reserve.lua: reserve a claimed task's cost ceiling against its season's budget and,
-- for an episode's task, against the season's per-episode cap (step 2 of admission; step 1 is
-- claim.lua in the account's slot).
--
-- KEYS[1]  season budget hash: `cap`, `reserved`, `spent` (micro-USD), `parked`, `need`;
--          `ep_cap` (per-episode cap) and per episode E `ep:E:reserved`, `ep:E:spent`,
--          `ep:E:parked`, `ep:E:need`
-- KEYS[2]  season reservations hash (task id → `<micro-USD>|<episode>`)
-- ARGV     per task, in claim order, three values: task id; reservation (micro-USD, integer
--          text); the task's episode ('' for a season-wide task such as a character sheet,
--          which only the season's cap holds). One call reserves a fetcher's whole batch for
--          the season, so admission costs one round trip per season and batch, not per task.
--
-- A free task (reservation 0) is admitted at once and holds nothing. Idempotent per task: a
-- task that already holds a reservation (a claim retried after a crash
-- or a lease that expired) keeps it and is admitted. Without a cap everything fits (spend is
-- still tracked). When a reservation does not fit, or the season (episode) is already parked,
-- nothing is reserved for it, the season (episode) is marked parked with reason `budget`
-- (`episode_budget`) and `need` keeps the amount that did not fit, so budget_settle.lua can
-- resume it once that much is free again; the tasks after it in the batch then find it parked.
-- The caller gives refused tasks back and parks the season's (episode's) deliveries in its
-- accounts' `parked` sets.
-- Returns, per task: 1 (reserved), 0 (the season does not fit: parked), 2 (the episode does
-- not fit). Amounts go to HINCRBY as the integer text they came in as: Redis turns a Lua number
-- into text in its shortest form, which for round values (2e8 micro-USD is $200) is exponent
-- notation that HINCRBY refuses.

local function reserve(id, amount_text, ep)
  local amount = tonumber(amount_text)
  -- A free task (an episode's assembly) reserves nothing and cannot overshoot: admitted even
  -- while the season is parked, without a reservation to settle.
  if amount == 0 then
    return 1
  end
  if redis.call('HEXISTS', KEYS[2], id) == 1 then
    return 1
  end
  local h = redis.call('HMGET', KEYS[1], 'cap', 'reserved', 'spent', 'parked', 'ep_cap')
  local cap = tonumber(h[1])
  if cap then
    local used = tonumber(h[2] or '0') + tonumber(h[3] or '0')
    if h[4] or used + amount > cap then
      redis.call('HSET', KEYS[1], 'parked', 'budget', 'need', amount_text)
      return 0
    end
  end
  local ep_cap = tonumber(h[5])
  if ep ~= '' and ep_cap then
    local p = 'ep:' .. ep .. ':'
    local e = redis.call('HMGET', KEYS[1], p .. 'reserved', p .. 'spent', p .. 'parked')
    local used = tonumber(e[1] or '0') + tonumber(e[2] or '0')
    if e[3] or used + amount > ep_cap then
      redis.call('HSET', KEYS[1], p .. 'parked', 'episode_budget', p .. 'need', amount_text)
      return 2
    end
  end
  redis.call('HSET', KEYS[2], id, amount_text .. '|' .. ep)
  redis.call('HINCRBY', KEYS[1], 'reserved', amount_text)
  if ep ~= '' then
    redis.call('HINCRBY', KEYS[1], 'ep:' .. ep .. ':reserved', amount_text)
  end
  return 1
end

local out = {}
for i = 1, #ARGV, 3 do
  out[#out + 1] = reserve(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
return out
