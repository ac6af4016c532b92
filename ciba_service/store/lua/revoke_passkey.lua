-- revoke_passkey.lua: delete one passkey of one user, and record the operator's action.
-- Security: from this step on no assertion of the credential verifies (it is gone from the
-- user's list and from the credential index at once). Guards: the passkey belongs to that user
-- (0, nothing written otherwise); the deletion and its audit record are one step.
-- KEYS[1] the passkey (p passkey:<b64 credential id>), KEYS[2] the audit record.
-- ARGV[1] prefix, ARGV[2] user_id, ARGV[3] credential id (b64), ARGV[4] record_id, ARGV[5..] the
-- audit record's field/value pairs.
-- Returns 1, or 0 when the user has no such passkey.

if text(redis.call('HGET', KEYS[1], 'user_id')) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', prefix .. 'passkeys:' .. ARGV[2], ARGV[3])
add_audit(KEYS[2], ARGV[4], 5)
return 1
