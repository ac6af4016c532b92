-- add_request.lua: store a new backchannel request with its auth_req_id and approval indexes.
-- Guards: request id, auth_req_id hash and approval id are unique (CONFLICT, nothing written
-- otherwise); a pending record and its two index keys expire together.
-- KEYS[1] the request (p request:<request_id>).
-- ARGV[1] prefix, ARGV[2] request_id, ARGV[3] ttl ms (0: durable), ARGV[4..] field/value pairs.
-- Returns 1.

local id = ARGV[2]
local f = {}
for i = 4, #ARGV, 2 do f[ARGV[i]] = ARGV[i + 1] end
local by_hash = prefix .. 'auth_req_id:' .. text(f['auth_req_id_hash'])
local by_approval = prefix .. 'approval:' .. text(f['approval_id'])
if redis.call('EXISTS', KEYS[1], by_hash, by_approval) > 0 then
  return conflict('request, auth_req_id or approval id already stored')
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
for _, key in ipairs(index_keys(id)) do redis.call('SET', key, id) end
if tonumber(ARGV[3]) > 0 then
  -- pending: the record and its indexes go together, retention after the request's expiry
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', by_hash, ARGV[3])
  redis.call('PEXPIRE', by_approval, ARGV[3])
end
reindex(id)
return 1
