-- update_request.lua: set fields of a stored request and refresh the sweep indexes.
-- Guards: a request that is gone stays gone; an update never recreates a partial record.
-- KEYS[1] the request.
-- ARGV[1] prefix, ARGV[2] request_id, ARGV[3..] field/value pairs (JSON values).
-- Returns 1, or 0 when the request is gone.

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
reindex(ARGV[2])
return 1
