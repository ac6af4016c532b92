-- add_user.lua: store a new user, its username index and its place in the user list.
-- Guards: user id and username are unique (CONFLICT, nothing written otherwise).
-- KEYS[1] the user (p user:<user_id>), KEYS[2] the username index (p username:<username>).
-- ARGV[1] prefix, ARGV[2] user_id, ARGV[3] created_at, ARGV[4..] field/value pairs.
-- Returns 1.

if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return conflict('user id or username already stored') end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', prefix .. 'users', tonumber(ARGV[3]), ARGV[2])
return 1
