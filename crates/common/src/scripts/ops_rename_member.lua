-- ops_rename_member.lua: rename a moved task in one dependency's dependents set.
--
-- KEYS[1]  dependents set (`rdeps`) of a dependency of the moved task
-- ARGV[1]  old member `<source account>|<id>`
-- ARGV[2]  new member `<target account>|<id>`
--
-- Only a set that named the task under its old account gains the new name, so a dependency that
-- never knew the task is not told to notify it. Idempotent. Returns 1 when renamed, 0 otherwise.

if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[1], ARGV[2])
  return 1
end
return 0
