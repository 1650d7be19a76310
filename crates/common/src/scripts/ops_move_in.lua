-- ops_move_in.lua: step (a) of moving a dead task to another account (target hash tag).
--
-- KEYS[1]  task record in the target account
-- KEYS[2]  ready stream of the target account
-- KEYS[3]  counts hash of the target account
-- KEYS[4]  dependents set of the task in the target account
-- ARGV[1]  consumer group
-- ARGV[2]  the record to create (TaskRecord::to_msgpack; account, chain and chain_pos already
--          name the target, attempts and provider fields already reset, errors kept)
-- ARGV[3..]  dependents (`account|id`) carried over from the source account's set
--
-- Idempotent: when the record already exists in the target (a re-run after a crash, or a
-- concurrent mover) nothing but the dependents set changes, so there is never a second stream
-- entry. Returns 'created' | 'exists'.

for i = 3, #ARGV do
  redis.call('SADD', KEYS[4], ARGV[i])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'exists'
end
local err = ensure_group(KEYS[2], ARGV[1])
if err then
  return err
end
local now = now_ms()
local t = decode_record(ARGV[2])
t.state = nil
t.moving_to = nil
push_ready(KEYS[2], t, now)
set_state(KEYS[3], t, 'ready', now)
save_task(KEYS[1], t)
return finish('created')
