-- add_audit.lua: record one operator action (see AuditRecord) and append it to the audit index.
-- Guards nothing; one script so the record and its place in the (ordered) index go together.
-- KEYS[1] the audit record (p audit:<record_id>).
-- ARGV[1] prefix, ARGV[2] record_id, ARGV[3..] the record's field/value pairs.
-- Returns 1.

add_audit(KEYS[1], ARGV[2], 3)
return 1
