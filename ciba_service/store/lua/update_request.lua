-- update_request.lua: set fields of a stored request and refresh the sweep indexes.
-- Guards: a request that is gone stays gone; an update never recreates a partial record.
-- KEYS[1] the request.
-- ARGV[1] prefix, ARGV[2] request_id, ARGV[3..] field/value pairs (JSON values).
-- Returns 1, or 0 when the request is gone.

local record = load_record(KEYS[1])
if not record then return 0 end
for i = 3, #ARGV, 2 do set_field(record, ARGV[i], ARGV[i + 1]) end
save_record(record)
reindex(ARGV[2], record)
return 1
