-- consume_enrollment.lua: mark an enrollment link used.
-- Security: an enrollment link registers one passkey; two completions racing with one link
-- (a leaked link used by an attacker at the same moment) cannot both add a credential.
-- KEYS[1] the enrollment.
-- ARGV[1] prefix, ARGV[2] now.
-- Returns 1, or 0 when the link was used, expired or gone.

local f = redis.call('HMGET', KEYS[1], 'used', 'expires_at')
if f[1] ~= 'false' or tonumber(f[2]) <= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'used', 'true')
return 1
