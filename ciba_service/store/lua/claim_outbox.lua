-- claim_outbox.lua: lease a request's undelivered notice to one sender, or drop it.
-- Security: one sender at a time: instances sweeping at the same moment cannot both send the
-- same approval link (the user is told once); a sender that died is replaced once its lease has
-- run out (the user is still told). A notice whose request is decided, expired or gone is
-- deleted instead: a stale link is never sent.
-- KEYS[1] the outbox entry (p outbox:<request_id>).
-- ARGV[1] prefix, ARGV[2] request_id, ARGV[3] now, ARGV[4] the new lease's end (now + lease).
-- Returns the entry's field/value pairs when claimed, nil otherwise.

local id = ARGV[2]
local index = prefix .. 'outbox'
local entry = load_record(KEYS[1])
if not entry or not field(entry, 'claimed_until') then
  redis.call('ZREM', index, id)
  return false
end
local r = load_record(request_key(id))
if not r or field(r, 'status') ~= '"pending"' or not field(r, 'expires_at')
    or tonumber(field(r, 'expires_at')) <= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', index, id)
  return false
end
if tonumber(field(entry, 'claimed_until')) > tonumber(ARGV[3]) then return false end
set_field(entry, 'claimed_until', ARGV[4])
set_field(entry, 'attempts', tostring(tonumber(field(entry, 'attempts') or '0') + 1))
save_record(entry)
redis.call('ZADD', index, tonumber(ARGV[4]), id)
return flat(entry)
