-- set_user_enabled.lua: enable or disable a user, and record the operator's action.
-- Guards: the user exists (0, nothing written otherwise); the change and its audit record are
-- one step, so no change goes unrecorded.
-- KEYS[1] the user (p user:<user_id>), KEYS[2] the audit record (p audit:<record_id>).
-- ARGV[1] prefix, ARGV[2] enabled (JSON true/false), ARGV[3] record_id, ARGV[4..] the audit
-- record's field/value pairs.
-- Returns 1, or 0 when there is no such user.

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'enabled', ARGV[2])
add_audit(KEYS[2], ARGV[3], 4)
return 1
