-- take_intent.lua: return and delete an unexpired intent.
-- Security: one intent binds one Keycloak channel request; a replayed channel call finds nothing.
-- KEYS[1] the intent.
-- ARGV[1] prefix, ARGV[2] now.
-- Returns the intent's field/value pairs, or nil when it is expired or gone.

local expires_at = redis.call('HGET', KEYS[1], 'expires_at')
if not expires_at or tonumber(expires_at) <= tonumber(ARGV[2]) then return false end
local record = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return record
