-- set_enrollment_challenge.lua: remember the WebAuthn challenge issued for an enrollment link.
-- Guards: a used (or missing) link gets no new challenge.
-- KEYS[1] the enrollment.
-- ARGV[1] prefix, ARGV[2] challenge (JSON).
-- Returns 1, or 0 when the link is used or gone.

if redis.call('HGET', KEYS[1], 'used') ~= 'false' then return 0 end
redis.call('HSET', KEYS[1], 'challenge', ARGV[2])
return 1
