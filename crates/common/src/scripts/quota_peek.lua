-- quota_peek.lua: how long until the account may take another submit (changes nothing but
-- dropping expired slot leases).
--
-- KEYS[1]  paused flag    KEYS[2]  cooldown flag    KEYS[3]  GCRA state
-- KEYS[4]  render slots   KEYS[5]  daily counts
-- ARGV[1..5]  quota, as in claim.lua
--
-- Fetchers call this before reading the stream so a throttled account costs one cheap call per
-- wait instead of a read, a claim and a put-back. claim.lua still decides, atomically.
-- Returns {wait ms, reason} (wait 0 = go; paused accounts answer -1).

if redis.call('EXISTS', KEYS[1]) == 1 then
  return { -1, 'paused' }
end
local q = parse_quota(ARGV, 1)
local keys = { cooldown = KEYS[2], gcra = KEYS[3], slots = KEYS[4], daily = KEYS[5] }
local wait, reason = quota_wait_ms(keys, q, now_ms(), now_us())
return { wait, reason or '' }
