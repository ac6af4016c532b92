-- add_passkey.lua: store a new passkey and add it to its user's list.
-- Guards: the credential id is unique and its user exists (CONFLICT, nothing written otherwise).
-- KEYS[1] the passkey (p passkey:<b64 credential id>).
-- ARGV[1] prefix, ARGV[2] user_id, ARGV[3] credential id (b64), ARGV[4] created_at,
-- ARGV[5..] field/value pairs.
-- Returns 1.

if redis.call('EXISTS', KEYS[1]) == 1 then return conflict('credential id already stored') end
if redis.call('EXISTS', prefix .. 'user:' .. ARGV[2]) == 0 then return conflict('unknown user') end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZADD', prefix .. 'passkeys:' .. ARGV[2], tonumber(ARGV[4]), ARGV[3])
return 1
