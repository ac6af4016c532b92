-- find_approver.lua: the user a backchannel request names, and whether they hold a passkey, in
-- one round trip (what /bc-authorize reads; without it: up to four, username, user, passkey list
-- and passkeys).
-- KEYS[1] the user's record (p user:<id>), or the username's key (p username:<name>).
-- ARGV[1] prefix, ARGV[2] "id" or "name".
-- Returns false (no such user), or {the user's hash as a flat list, 1 or 0}: 1 when a passkey
-- listed for the user is there and names the user (as passkeys_for filters its list).

local user_key = KEYS[1]
if ARGV[2] == 'name' then
  local user_id = redis.call('GET', KEYS[1])
  if not user_id then return false end
  user_key = ARGV[1] .. 'user:' .. user_id
end
local user = redis.call('HGETALL', user_key)
if #user == 0 then return false end
local owner = redis.call('HGET', user_key, 'user_id')
local user_id = cjson.decode(owner)
local has_passkey = 0
for _, cred in ipairs(redis.call('ZRANGE', ARGV[1] .. 'passkeys:' .. user_id, 0, -1)) do
  if redis.call('HGET', ARGV[1] .. 'passkey:' .. cred, 'user_id') == owner then
    has_passkey = 1
    break
  end
end
return {user, has_passkey}
