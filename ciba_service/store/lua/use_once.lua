-- use_once.lua: record a single-use key until its expiry.
-- Security: a client assertion, request object or DPoP proof is accepted once across all
-- instances; a key whose recorded expiry has passed is free again, as in the SQLite store.
-- KEYS[1] the key (p once:<key>).
-- ARGV[1] prefix, ARGV[2] expires_at, ARGV[3] now, ARGV[4] ttl ms.
-- Returns 1 when recorded, 0 when it was recorded before and has not expired (a replay).

local stored = redis.call('GET', KEYS[1])
if stored and tonumber(stored) > tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
return 1
