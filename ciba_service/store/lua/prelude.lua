-- prelude.lua: shared by every script of the Redis store (ciba_service/store/redis.py); the
-- store puts it in front of each script's own text before registering it, so these locals are in
-- scope in all of them. Guards nothing by itself.
-- ARGV[1] of every script is the key prefix (``prefix`` below); KEYS[1] is the record the script
-- is about. Defines: prefix, request_key(id), text(json), index_keys(id), reindex(id),
-- conflict(what) (an error reply ``CONFLICT <what>``, raised as StoreConflict by the store),
-- add_audit(key, id, first) (an operator's audit record, from ARGV[first..]).

local prefix = ARGV[1]
local function request_key(id) return prefix .. 'request:' .. id end

-- The text of a field holding a JSON string; nil for null or a missing field. Only strings are
-- decoded (never numbers), so nothing loses precision.
local function text(json)
  if not json then return nil end
  local value = cjson.decode(json)
  if type(value) == 'string' then return value end
  return nil
end

-- The index keys pointing at request ``id``.
local function index_keys(id)
  local f = redis.call('HMGET', request_key(id), 'auth_req_id_hash', 'approval_id', 'token_jti')
  local keys = {}
  if text(f[1]) then table.insert(keys, prefix .. 'auth_req_id:' .. text(f[1])) end
  if text(f[2]) then table.insert(keys, prefix .. 'approval:' .. text(f[2])) end
  if text(f[3]) then table.insert(keys, prefix .. 'jti:' .. text(f[3])) end
  return keys
end

-- Put request ``id`` in (or take it out of) the two time-ordered sets the sweeps read, from
-- its current record: called after every change of status, callback state or upstream.
local function reindex(id)
  local f = redis.call('HMGET', request_key(id), 'status', 'callback_state', 'expires_at', 'upstream')
  local open = f[2] == '"none"'
  if open and f[1] == '"pending"' then
    redis.call('ZADD', prefix .. 'pending', tonumber(f[3]), id)
  else
    redis.call('ZREM', prefix .. 'pending', id)
  end
  local delivery = nil
  if f[4] then
    local ok, upstream = pcall(cjson.decode, f[4])
    if ok and type(upstream) == 'table' then delivery = upstream['delivery'] end
  end
  if open and (delivery == 'ping' or delivery == 'push') then
    local due = tonumber(f[3])
    if f[1] == '"approved"' or f[1] == '"denied"' then due = 0 end
    redis.call('ZADD', prefix .. 'notify', due, id)
  else
    redis.call('ZREM', prefix .. 'notify', id)
  end
end

local function conflict(what) return redis.error_reply('CONFLICT ' .. what) end

-- Store the audit record ``id`` (hash ``key``, field/value pairs ARGV[first..]) and append it to the
-- audit index, scored by a counter: the index keeps the order the records were written in, also
-- within one second and across instances.
local function add_audit(key, id, first)
  redis.call('HSET', key, unpack(ARGV, first))
  redis.call('ZADD', prefix .. 'audit', redis.call('INCR', prefix .. 'audit_seq'), id)
end
