-- quota_peek.lua: how long until some key of the account's pool may take another submit
-- (changes nothing but dropping expired slot leases and their owners).
--
-- KEYS[1]  account paused flag
-- KEYS[2]  render slots zset      KEYS[3]  slot owners hash
-- KEYS[4 .. 3+4m]  per pool key: paused flag, cooldown flag, GCRA state, daily counts, as in
--          claim.lua
-- ARGV[1]  m, the number of pool keys
-- ARGV[2 .. 1+5m]  per pool key: name and quota, as in claim.lua
--
-- Fetchers call this before reading the stream so a throttled account costs one cheap call per
-- wait instead of a read, a claim and a put-back. claim.lua still decides, atomically.
-- Returns {wait ms, reason} (wait 0 = go; a paused account, or one whose every key is paused,
-- answers -1).

if redis.call('EXISTS', KEYS[1]) == 1 then
  return { -1, 'paused' }
end
local now = now_ms()
local now_u = now_us()
local pool = pool_load(tonumber(ARGV[1]), 4, 2, KEYS[2], KEYS[3], now)
local k, wait, why = pool_pick(pool, now, now_u)
if k ~= nil then
  return { 0, '' }
end
return { wait, why }
