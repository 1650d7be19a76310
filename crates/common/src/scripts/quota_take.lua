-- quota_take.lua: take up to n tokens from an account's poll-rate limiter (GCRA).
--
-- KEYS[1]  GCRA state of the limiter (µs, Redis clock)
-- ARGV[1]  emission interval (µs)
-- ARGV[2]  tolerance (µs): interval × (burst − 1)
-- ARGV[3]  tokens wanted
--
-- Some providers count status polls against the account's rate. Pollers on every host ask here
-- before polling a batch, so the fleet together stays within the rate.
-- Returns {tokens granted, ms until the next token when fewer than wanted were granted}.

local now_u = now_us()
local q = { interval_us = tonumber(ARGV[1]), tolerance_us = tonumber(ARGV[2]) }
local wanted = tonumber(ARGV[3])
local granted = 0
while granted < wanted and gcra_wait_ms(KEYS[1], q, now_u) == 0 do
  gcra_take(KEYS[1], q, now_u)
  granted = granted + 1
end
local wait = 0
if granted < wanted then
  wait = gcra_wait_ms(KEYS[1], q, now_u)
end
return { granted, wait }
