-- upsert_passkeys.lua: insert or refresh a user's passkeys mirrored from the IdP, optionally
-- deleting the user's other passkeys.
-- Security: a known credential keeps its owner, transports and creation time and never has its
-- counter lowered: a stale IdP copy must not reopen the window for a cloned authenticator. With
-- replace, a credential revoked at the IdP is deleted in the same step. Every new passkey's user
-- must exist (CONFLICT, nothing written otherwise).
-- KEYS[1] the user's passkey list (p passkeys:<user_id>).
-- ARGV[1] prefix, ARGV[2] replace ('1': first delete the passkeys KEYS[1] lists that are not in
-- the list, '0': keep them), then six per passkey: credential id (b64), user_id, created_at,
-- public_key, sign_count, JSON of all its field/value pairs.
-- Returns 1.

local keep = {}
for i = 3, #ARGV, 6 do
  keep[ARGV[i]] = true
  if redis.call('EXISTS', prefix .. 'passkey:' .. ARGV[i]) == 0
      and redis.call('EXISTS', prefix .. 'user:' .. ARGV[i + 1]) == 0 then
    return conflict('unknown user')
  end
end
if ARGV[2] == '1' then
  for _, cred in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if not keep[cred] then
      redis.call('DEL', prefix .. 'passkey:' .. cred)
      redis.call('ZREM', KEYS[1], cred)
    end
  end
end
for i = 3, #ARGV, 6 do
  local key = prefix .. 'passkey:' .. ARGV[i]
  local stored = redis.call('HMGET', key, 'user_id', 'sign_count')
  if not stored[1] then
    for field, value in pairs(cjson.decode(ARGV[i + 5])) do redis.call('HSET', key, field, value) end
    redis.call('ZADD', prefix .. 'passkeys:' .. ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i])
  elseif text(stored[1]) == ARGV[i + 1] then
    local count = ARGV[i + 4]
    if tonumber(stored[2]) > tonumber(count) then count = stored[2] end
    redis.call('HSET', key, 'public_key', ARGV[i + 3], 'sign_count', count)
  end
end
return 1
