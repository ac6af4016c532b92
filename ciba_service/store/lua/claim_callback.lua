-- claim_callback.lua: callback_state none -> sending.
-- Security: one decision is sent to Keycloak (or one notification to the client) once, even
-- when several instances sweep at the same time.
-- KEYS[1] the request.
-- ARGV[1] prefix, ARGV[2] request_id.
-- Returns 1 when claimed, 0 when somebody claimed it before.

local record = load_record(KEYS[1])
if not record or field(record, 'callback_state') ~= '"none"' then return 0 end
set_field(record, 'callback_state', '"sending"')
save_record(record)
reindex(ARGV[2], record)
return 1
