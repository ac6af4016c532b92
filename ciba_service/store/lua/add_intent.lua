-- add_intent.lua: store a new intent (Keycloak mode), expiring after its expiry plus retention.
-- Guards: the intent id is unique (CONFLICT, nothing written otherwise).
-- KEYS[1] the intent (p intent:<intent_id>).
-- ARGV[1] prefix, ARGV[2] ttl ms, ARGV[3..] field/value pairs.
-- Returns 1.

if redis.call('EXISTS', KEYS[1]) == 1 then return conflict('intent already stored') end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
