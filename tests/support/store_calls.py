"""Every store method as a call on the records of :func:`seed`: the failure tests (a backend
down, read-only, out of memory or locked) run each of them, on SQLite and Redis."""

from __future__ import annotations

from collections.abc import Callable

from ciba_service.core.model import AuditRecord, CallbackState, ChannelRefusal, Enrollment, OutboxEntry, RequestStatus
from ciba_service.store import Store
from tests.support.records import NOW, intent, passkey, ping, receipt, request, user

__all__ = ["CALLS", "DELETES", "READS", "WRITES", "seed"]


# every method, for the failure tests -----------------------------------------------------------
def seed(store: Store) -> None:
    """Records for WRITES to change: each of them would change something if the store let it."""
    store.add_user(user())
    store.add_passkey(passkey())
    store.add_enrollment(Enrollment(token_hash="t1", user_id="u1", expires_at=NOW + 600))
    store.add_request(
        request("r1"), outbox=OutboxEntry(request_id="r1", notice={}, created_at=NOW, expires_at=NOW + 300)
    )
    store.add_request(ping("r2"))
    store.decide("r2", status=RequestStatus.APPROVED, now=NOW)
    store.add_intent(intent())
    store.keep_refusal(ChannelRefusal(intent_id="i9", error="e", error_description="d", expires_at=NOW + 60), now=NOW)


def audit(record_id: str) -> AuditRecord:
    return AuditRecord(record_id=record_id, at=NOW, actor="ops", action="user.disabled", subject="u1")


Call = Callable[[Store], object]
# Calls that create or change a record (on the records of :func:`seed`), none of which deletes
# anything first: a backend refusing writes refuses each of them.
WRITES: dict[str, Call] = {
    "add_user": lambda s: s.add_user(user("u2", "bob")),
    "upsert_user": lambda s: s.upsert_user(user(display_name="Alice B")),
    "add_passkey": lambda s: s.add_passkey(passkey(b"cred-2")),
    "update_sign_count": lambda s: s.update_sign_count(b"\x00cred\xff", old=0, new=1),
    "upsert_passkey": lambda s: s.upsert_passkey(passkey(sign_count=5)),
    "replace_passkeys": lambda s: s.replace_passkeys("u1", [passkey(sign_count=5), passkey(b"cred-2")]),
    "add_enrollment": lambda s: s.add_enrollment(Enrollment(token_hash="t2", user_id="u1", expires_at=NOW + 60)),
    "set_enrollment_challenge": lambda s: s.set_enrollment_challenge("t1", b"challenge"),
    "consume_enrollment": lambda s: s.consume_enrollment("t1", now=NOW),
    "add_request": lambda s: s.add_request(request("r3")),
    "record_poll": lambda s: s.record_poll("r1", now=NOW, interval=7),
    "decide": lambda s: s.decide("r1", status=RequestStatus.DENIED, now=NOW, receipt=receipt()),
    "mark_issued": lambda s: s.mark_issued("r2", jti="j1"),
    "set_upstream": lambda s: s.set_upstream("r1", {"delivery": "push"}),
    "revoke_request": lambda s: s.revoke_request("r2"),
    "claim_callback": lambda s: s.claim_callback("r2"),
    "set_callback_state": lambda s: s.set_callback_state("r2", CallbackState.SENT),
    "add_intent": lambda s: s.add_intent(intent("i2")),
    "use_once": lambda s: s.use_once("jti-1", expires_at=NOW + 60, now=NOW),
    "reserve_attempt": lambda s: s.reserve_attempt("k", attempt_id="a1", now=NOW, window=900, limit=3),
    "set_user_code": lambda s: s.set_user_code("u1", "scrypt$1"),
    "claim_outbox": lambda s: s.claim_outbox("r1", now=NOW, lease=60),
    "set_user_enabled": lambda s: s.set_user_enabled("u1", enabled=False, audit=audit("a1")),
    "add_audit": lambda s: s.add_audit(audit("a2")),
    "keep_refusal": lambda s: s.keep_refusal(
        ChannelRefusal(intent_id="i2", error="e", error_description="d", expires_at=NOW + 60), now=NOW
    ),
}
DELETES: dict[str, Call] = {
    "delete_request": lambda s: s.delete_request("r1"),
    "take_intent": lambda s: s.take_intent("i1", now=NOW),
    "delete_intent": lambda s: s.delete_intent("i1"),
    "cancel_attempt": lambda s: s.cancel_attempt("k", attempt_id="a1"),
    "mark_outbox_delivered": lambda s: s.mark_outbox_delivered("r1"),
    "take_refusal": lambda s: s.take_refusal("i9", now=NOW),
    "revoke_passkey": lambda s: s.revoke_passkey(b"\x00cred\xff", user_id="u1", audit=audit("a3")),
}
READS: dict[str, Call] = {
    "get_user": lambda s: s.get_user("u1"),
    "find_user": lambda s: s.find_user("alice"),
    "list_users": lambda s: s.list_users(),
    "passkeys_for": lambda s: s.passkeys_for("u1"),
    "find_passkey": lambda s: s.find_passkey(b"\x00cred\xff"),
    "get_enrollment": lambda s: s.get_enrollment("t1"),
    "get_request": lambda s: s.get_request("r1"),
    "find_request_by_auth_req_id": lambda s: s.find_request_by_auth_req_id("hash-r1"),
    "find_request_by_approval_id": lambda s: s.find_request_by_approval_id("approval-r1"),
    "find_request_by_jti": lambda s: s.find_request_by_jti("j1"),
    "get_receipt": lambda s: s.get_receipt("rc1"),
    "expired_pending": lambda s: s.expired_pending(now=NOW),
    "count_pending": lambda s: s.count_pending(now=NOW),
    "pending_notifications": lambda s: s.pending_notifications(now=NOW),
    "get_user_code": lambda s: s.get_user_code("u1"),
    "outbox_due": lambda s: s.outbox_due(now=NOW, limit=10),
    "audit_records": lambda s: s.audit_records(limit=10),
}
CALLS = {**WRITES, **DELETES, **READS}
