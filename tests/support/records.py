"""Builders for the records the stores hold (users, passkeys, requests, receipts, intents),
with every field filled, dated at :data:`NOW` (the stores' clock in store tests)."""

from __future__ import annotations

from typing import Any

from ciba_service.core.model import ApprovalReceipt, BackchannelRequest, Intent, Passkey, User

__all__ = ["NOW", "intent", "passkey", "ping", "receipt", "request", "user"]

NOW = 1_800_000_000


def user(user_id: str = "u1", username: str = "alice", **fields: Any) -> User:
    # A user handle with every byte value: bytes must survive the store unchanged.
    values: dict[str, Any] = {"display_name": "Alice", "user_handle": bytes(range(256)), "created_at": NOW}
    values.update(fields)
    return User(user_id=user_id, username=username, **values)


def passkey(credential_id: bytes = b"\x00cred\xff", user_id: str = "u1", sign_count: int = 0, **fields: Any) -> Passkey:
    values: dict[str, Any] = {
        "public_key": b"\xa5\x01\x02\x03&",
        "transports": ["internal", "hybrid"],
        "created_at": NOW,
    }
    values.update(fields)
    return Passkey(credential_id=credential_id, user_id=user_id, sign_count=sign_count, **values)


def request(request_id: str = "r1", *, expires_in: int = 300, **fields: Any) -> BackchannelRequest:
    values: dict[str, Any] = {
        "auth_req_id_hash": f"hash-{request_id}",
        "approval_id": f"approval-{request_id}",
        "client_id": "agent-1",
        "client_name": "Agent One",
        "user_id": "u1",
        "scope": "openid",
        "binding_message": "BM-1",
        "authorization_details": [{"type": "iam_policy", "actions": [], "amount": 12.5, "nested": {"empty": {}}}],
        "created_at": NOW,
        "expires_at": NOW + expires_in,
        "interval": 2,
        "nonce": "n",
    }
    values.update(fields)
    return BackchannelRequest(request_id=request_id, **values)


def receipt(receipt_id: str = "rc1", request_id: str = "r1") -> ApprovalReceipt:
    return ApprovalReceipt(
        receipt_id=receipt_id,
        request_id=request_id,
        user_id="u1",
        credential_id=b"\x00cred\xff",
        credential_public_key=b"\xa5\x01",
        preimage=b'{"jcs":true}\x00\xfe',
        challenge="Y2hhbGxlbmdl",
        assertion={"id": "abc", "response": {"clientDataJSON": "e30"}},
        rp_id="localhost",
        origin="http://localhost:8000",
        created_at=NOW,
    )


def intent(intent_id: str = "i1", *, expires_in: int = 60) -> Intent:
    return Intent(
        intent_id=intent_id,
        client_id="agent-1",
        login_hint="alice",
        scope="openid",
        binding_message=None,
        authorization_details=[{"type": "iam_policy", "actions": ["update"]}],
        created_at=NOW,
        expires_at=NOW + expires_in,
    )


def ping(request_id: str, **fields: Any) -> BackchannelRequest:
    upstream = {"delivery": "ping", "endpoint": "http://localhost:9/cb", "notification_token": "t", "auth_req_id": "a"}
    return request(request_id, upstream=upstream, **fields)
