-- budget_settle.lua: settle (or release) a task's reservation with what the attempt cost, and
-- resume a season or episode parked over budget once what it was waiting for fits again.
--
-- KEYS[1]  season budget hash (fields as in budget_reserve.lua)
-- KEYS[2]  season reservations hash (task id → `<micro-USD>|<episode>`; a bare amount from
--          before per-episode accounting counts against the season only)
-- KEYS[3]  season spend ledger (`<id>#<attempt>` → JSON spend record)
-- ARGV[1]  task id
-- ARGV[2]  ledger field `<id>#<attempt>`, '' for a release (given back: nothing was spent)
-- ARGV[3]  actual cost (micro-USD, integer text)
-- ARGV[4]  spend record (JSON: usd, group, kind, account, key) for the ledger
-- ARGV[5]  the task's episode ('' for a season-wide task)
--
-- The reservation is dropped and the actual cost added to `spent` (and the episode's) once per
-- attempt: a settle repeated (a replayed completion) finds the ledger entry and adds nothing.
-- A parked season resumes when `cap - reserved - spent` covers its `need` again (the amount
-- that did not fit); likewise a parked episode under `ep_cap`. The caller then takes the
-- season's (episode's) entries out of its accounts' `parked` sets.
-- Returns {micro-USD added to `spent`, 1 if the season resumed, 1 if the episode resumed}.

local function num(v)
  return tonumber(v or '0') or 0
end

local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  redis.call('HDEL', KEYS[2], ARGV[1])
  local bar = string.find(held, '|', 1, true)
  local amount, held_ep = held, ''
  if bar then
    amount = string.sub(held, 1, bar - 1)
    held_ep = string.sub(held, bar + 1)
  end
  -- Negated as text: a Lua number would reach Redis as '-0' for a free task and in exponent
  -- notation for round amounts, both of which HINCRBY refuses.
  if tonumber(amount) ~= 0 then
    redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. amount)
    if held_ep ~= '' then
      redis.call('HINCRBY', KEYS[1], 'ep:' .. held_ep .. ':reserved', '-' .. amount)
    end
  end
end
local ep = ARGV[5]
local added = 0
local actual = tonumber(ARGV[3]) or 0
if ARGV[2] ~= '' and actual > 0 and redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[4]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'spent', ARGV[3])
  if ep ~= '' then
    redis.call('HINCRBY', KEYS[1], 'ep:' .. ep .. ':spent', ARGV[3])
  end
  added = actual
end

local season_resumed, episode_resumed = 0, 0
local h = redis.call('HMGET', KEYS[1], 'cap', 'reserved', 'spent', 'parked', 'need', 'ep_cap')
if h[4] and h[5] and h[1] and num(h[2]) + num(h[3]) + num(h[5]) <= num(h[1]) then
  redis.call('HDEL', KEYS[1], 'parked', 'need')
  season_resumed = 1
end
if ep ~= '' and h[6] then
  local p = 'ep:' .. ep .. ':'
  local e = redis.call('HMGET', KEYS[1], p .. 'reserved', p .. 'spent', p .. 'parked', p .. 'need')
  if e[3] and e[4] and num(e[1]) + num(e[2]) + num(e[4]) <= num(h[6]) then
    redis.call('HDEL', KEYS[1], p .. 'parked', p .. 'need')
    episode_resumed = 1
  end
end
return { added, season_resumed, episode_resumed }
