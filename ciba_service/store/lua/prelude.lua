-- prelude.lua: shared by every script of the Redis store (ciba_service/store/redis.py); the
-- store puts it in front of each script's own text before registering it, so these locals are in
-- scope in all of them. Guards nothing by itself.
-- ARGV[1] of every script is the key prefix (``prefix`` below); KEYS[1] is the record the script
-- is about. Defines: prefix, request_key(id), text(json), parse_record(key, raw),
-- load_record(key), field(record, name), set_field(record, name, json), save_record(record),
-- flat(record), index_keys(record), reindex(id, record), conflict(what) (an error reply
-- ``CONFLICT <what>``, raised as StoreConflict by the store),
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

-- A request or outbox record is a string: one line per field, ``name=<JSON value>`` (JSON never
-- holds a raw newline); a request leaves out its fields at their default (see redis.py,
-- "Records"). Scripts change a field by replacing its line's JSON text as a whole: no JSON
-- written by the service is ever decoded and encoded again here (cjson would round numbers and
-- turn [] into {}).
-- The defaults of the request fields the scripts compare (BackchannelRequest's):
local REQUEST_DEFAULTS = {status = '"pending"', callback_state = '"none"'}

local function parse_record(key, raw)
  local names, fields = {}, {}
  for line in string.gmatch(raw, '[^\n]+') do
    local at = string.find(line, '=', 1, true)
    local name = string.sub(line, 1, at - 1)
    names[#names + 1] = name
    fields[name] = string.sub(line, at + 1)
  end
  return {key = key, names = names, fields = fields}
end

-- The record stored at ``key``, or nil. A record of the previous format (a hash of the same
-- fields, each holding its JSON text) is read alike; save_record rewrites it as a string.
local function load_record(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'string' then return parse_record(key, redis.call('GET', key)) end
  if kind ~= 'hash' then return nil end
  local flat = redis.call('HGETALL', key)
  local names, fields = {}, {}
  for i = 1, #flat, 2 do
    names[#names + 1] = flat[i]
    fields[flat[i]] = flat[i + 1]
  end
  return {key = key, names = names, fields = fields}
end

local function field(record, name) return record.fields[name] or REQUEST_DEFAULTS[name] end

local function set_field(record, name, json)
  if record.fields[name] == nil then record.names[#record.names + 1] = name end
  record.fields[name] = json
end

-- Written back in place, its TTL (if any) kept.
local function save_record(record)
  local lines = {}
  for i, name in ipairs(record.names) do lines[i] = name .. '=' .. record.fields[name] end
  redis.call('SET', record.key, table.concat(lines, '\n'), 'KEEPTTL')
end

-- Its field/value pairs, as HGETALL answers them.
local function flat(record)
  local pairs_ = {}
  for _, name in ipairs(record.names) do
    pairs_[#pairs_ + 1] = name
    pairs_[#pairs_ + 1] = record.fields[name]
  end
  return pairs_
end

-- The index keys pointing at ``record`` (a loaded request).
local function index_keys(record)
  local keys = {}
  local by_hash = text(field(record, 'auth_req_id_hash'))
  local approval = text(field(record, 'approval_id'))
  local jti = text(field(record, 'token_jti'))
  if by_hash then table.insert(keys, prefix .. 'auth_req_id:' .. by_hash) end
  if approval then table.insert(keys, prefix .. 'approval:' .. approval) end
  if jti then table.insert(keys, prefix .. 'jti:' .. jti) end
  return keys
end

-- Put request ``id`` in (or take it out of) the two time-ordered sets the sweeps read, from
-- its current ``record`` (nil once deleted): called after every change of status, callback
-- state or upstream.
local function reindex(id, record)
  local status, open, expires_at, delivery = nil, false, nil, nil
  if record then
    status = field(record, 'status')
    open = field(record, 'callback_state') == '"none"'
    expires_at = tonumber(field(record, 'expires_at'))
    local upstream = field(record, 'upstream')
    if upstream then
      local ok, decoded = pcall(cjson.decode, upstream)
      if ok and type(decoded) == 'table' then delivery = decoded['delivery'] end
    end
  end
  if open and status == '"pending"' then
    redis.call('ZADD', prefix .. 'pending', expires_at, id)
  else
    redis.call('ZREM', prefix .. 'pending', id)
  end
  if open and (delivery == 'ping' or delivery == 'push') then
    local due = expires_at
    if status == '"approved"' or status == '"denied"' then due = 0 end
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
