-- add_enrollment.lua: store a new enrollment link, expiring after its expiry plus retention.
-- Guards: the token hash is unique and the user exists (CONFLICT, nothing written otherwise).
-- KEYS[1] the enrollment (p enrollment:<token_hash>).
-- ARGV[1] prefix, ARGV[2] user_id, ARGV[3] ttl ms, ARGV[4..] field/value pairs.
-- Returns 1.

if redis.call('EXISTS', KEYS[1]) == 1 then return conflict('enrollment already stored') end
if redis.call('EXISTS', prefix .. 'user:' .. ARGV[2]) == 0 then return conflict('unknown user') end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
