-- claim_callback.lua: callback_state none -> sending.
-- Security: one decision is sent to Keycloak (or one notification to the client) once, even
-- when several instances sweep at the same time.
-- KEYS[1] the request.
-- ARGV[1] prefix, ARGV[2] request_id.
-- Returns 1 when claimed, 0 when somebody claimed it before.

if redis.call('HGET', KEYS[1], 'callback_state') ~= '"none"' then return 0 end
redis.call('HSET', KEYS[1], 'callback_state', '"sending"')
reindex(ARGV[2])
return 1
