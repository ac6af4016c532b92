-- delete_request.lua: delete a request, the index keys still pointing at it, its sweep entries
-- and its outbox entry.
-- Guards: an index key now pointing at another request is left alone.
-- KEYS[1] the request.
-- ARGV[1] prefix, ARGV[2] request_id.
-- Returns 1.

local record = load_record(KEYS[1])
if record then
  for _, key in ipairs(index_keys(record)) do
    if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
  end
end
redis.call('DEL', KEYS[1])
reindex(ARGV[2], nil)
redis.call('DEL', prefix .. 'outbox:' .. ARGV[2])
redis.call('ZREM', prefix .. 'outbox', ARGV[2])
return 1
