-- mark_issued.lua: approved -> issued, recording the token's jti and its index.
-- Security: approved -> issued happens once, so two redemptions of one auth_req_id racing on
-- two instances cannot both mint a token.
-- KEYS[1] the request.
-- ARGV[1] prefix, ARGV[2] request_id, ARGV[3] token_jti (JSON), ARGV[4] jti (raw, for the index).
-- Returns 1, or 0 when the request was not approved.

local record = load_record(KEYS[1])
if not record or field(record, 'status') ~= '"approved"' then return 0 end
set_field(record, 'status', '"issued"')
set_field(record, 'token_jti', ARGV[3])
save_record(record)
redis.call('SET', prefix .. 'jti:' .. ARGV[4], ARGV[2])
reindex(ARGV[2], record)
return 1
