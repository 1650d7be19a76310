-- ops_unindex.lua: drop a purged task from its season index (season hash tag).
--
-- KEYS[1]  season index hash (task id -> account)
-- ARGV[1]  task id
-- ARGV[2]  account the purged record lived in
--
-- The field goes only while it still names that account: an index already pointing elsewhere
-- (the task was moved, or enqueued again) is left alone. Returns 1 when removed, 0 otherwise.

if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
