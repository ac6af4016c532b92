-- decide.lua: pending -> approved/denied, storing the receipt in the same step.
-- Security: pending -> decided happens once. Two approvals racing (two tabs, two instances, an
-- approval racing a denial) cannot both win, so the user's one decision is the only one, and
-- the receipt is stored in the same step as the decision it proves.
-- KEYS[1] the request, KEYS[2] the receipt (only when there is one).
-- ARGV[1] prefix, ARGV[2] request_id, ARGV[3] now, ARGV[4] status (JSON), ARGV[5] decided_at
-- (JSON), ARGV[6] receipt_id (JSON, null without a receipt), ARGV[7..] receipt field/value pairs.
-- Returns 1 when decided, 0 when the request was not pending, unexpired and unclaimed; CONFLICT
-- when the receipt id is taken.

local record = load_record(KEYS[1])
-- callback_state: a sweep that closed the request (an instance whose clock runs ahead) and a
-- late decision exclude each other.
if not record or field(record, 'status') ~= '"pending"'
    or tonumber(field(record, 'expires_at')) <= tonumber(ARGV[3])
    or field(record, 'callback_state') ~= '"none"' then
  return 0
end
if #KEYS > 1 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return conflict('receipt id already stored') end
  redis.call('HSET', KEYS[2], unpack(ARGV, 7))
end
set_field(record, 'status', ARGV[4])
set_field(record, 'decided_at', ARGV[5])
set_field(record, 'receipt_id', ARGV[6])
save_record(record)
-- decided is durable: the record and its indexes outlive any TTL they had while pending.
redis.call('PERSIST', KEYS[1])
for _, key in ipairs(index_keys(record)) do redis.call('PERSIST', key) end
reindex(ARGV[2], record)
return 1
