-- update_sign_count.lua: compare-and-set of a passkey's signature counter.
-- Security: the counter moves only from the value this approval read. Two assertions from a
-- cloned authenticator carrying the same counter cannot both pass, whichever instance gets them.
-- KEYS[1] the passkey.
-- ARGV[1] prefix, ARGV[2] old sign_count, ARGV[3] new sign_count (JSON integers).
-- Returns 1, or 0 when the counter was not ``old`` any more.

if redis.call('HGET', KEYS[1], 'sign_count') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'sign_count', ARGV[3])
return 1
