-- upsert_user.lua: insert a user mirrored from the IdP, or refresh the mirrored fields of a
-- known user (never its user handle or creation time).
-- Guards: a username belongs to one user (CONFLICT, nothing written otherwise).
-- KEYS[1] the user, KEYS[2] the new username's index.
-- ARGV[1] prefix, ARGV[2] user_id, ARGV[3] created_at, ARGV[4] username, ARGV[5] display_name,
-- ARGV[6] enabled (all three JSON), ARGV[7..] all field/value pairs.
-- Returns 1.

local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] then return conflict('username belongs to another user') end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local old = prefix .. 'username:' .. text(redis.call('HGET', KEYS[1], 'username'))
  if old ~= KEYS[2] and redis.call('GET', old) == ARGV[2] then redis.call('DEL', old) end
  redis.call('HSET', KEYS[1], 'username', ARGV[4], 'display_name', ARGV[5], 'enabled', ARGV[6])
else
  redis.call('HSET', KEYS[1], unpack(ARGV, 7))
  redis.call('ZADD', prefix .. 'users', tonumber(ARGV[3]), ARGV[2])
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
