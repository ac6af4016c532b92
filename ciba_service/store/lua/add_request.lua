-- add_request.lua: store a new backchannel request with its auth_req_id and approval indexes and,
-- when given, its user's notice in the outbox.
-- Guards: request id, auth_req_id hash and approval id are unique (CONFLICT, nothing written
-- otherwise); a pending record and its two index keys expire together; the notice is written in
-- the same step as its request, so a request acknowledged to the agent never lacks its notice
-- (a crash right after answering leaves the notice for another sender).
-- KEYS[1] the request (p request:<request_id>), KEYS[2] its outbox entry (p outbox:<request_id>,
-- only when there is one).
-- ARGV[1] prefix, ARGV[2] request_id, ARGV[3] ttl ms (0: durable), ARGV[4] outbox entry ttl ms,
-- ARGV[5] the outbox entry's record ('' for none), ARGV[6] the request's record (records:
-- ``name=JSON`` lines, see the prelude).
-- Returns 1.

local id = ARGV[2]
local record = parse_record(KEYS[1], ARGV[6])
local by_hash = prefix .. 'auth_req_id:' .. text(field(record, 'auth_req_id_hash'))
local by_approval = prefix .. 'approval:' .. text(field(record, 'approval_id'))
if redis.call('EXISTS', KEYS[1], by_hash, by_approval) > 0 then
  return conflict('request, auth_req_id or approval id already stored')
end
redis.call('SET', KEYS[1], ARGV[6])
for _, key in ipairs(index_keys(record)) do redis.call('SET', key, id) end
if tonumber(ARGV[3]) > 0 then
  -- pending: the record and its indexes go together, retention after the request's expiry
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', by_hash, ARGV[3])
  redis.call('PEXPIRE', by_approval, ARGV[3])
end
reindex(id, record)
if ARGV[5] ~= '' then
  local entry = parse_record(KEYS[2], ARGV[5])
  -- replaces a leftover of an earlier request with this id, which is no one's notice
  redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[4])
  -- due for a sweep once its first lease (the answering instance's) runs out
  redis.call('ZADD', prefix .. 'outbox', tonumber(field(entry, 'claimed_until')), id)
end
return 1
