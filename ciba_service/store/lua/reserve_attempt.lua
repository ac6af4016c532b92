-- reserve_attempt.lua: prune, count and add one attempt in a sliding window.
-- Security: prune, count and add in one script, so instances guessing at once cannot all see
-- "one attempt left" and all proceed (online guessing limits, e.g. user codes).
-- KEYS[1] the attempts (p attempts:<key>, a sorted set: attempt id scored by time).
-- ARGV[1] prefix, ARGV[2] attempt id, ARGV[3] now, ARGV[4] window (s), ARGV[5] limit,
-- ARGV[6] seconds kept past the window (clock skew).
-- Returns 1 when recorded, 0 when ``limit`` attempts remain in the window.

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[6]))
return 1
