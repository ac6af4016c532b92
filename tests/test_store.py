"""The SQLite store: restarts lose nothing; guarded transitions are compare-and-set."""

from __future__ import annotations

from pathlib import Path

from ciba_service.service import build_provider
from ciba_service.store import RequestStatus, SQLiteStore
from tests.conftest import Env


def test_restart_loses_nothing(env: Env, tmp_path: Path) -> None:
    pending_id = env.bc_authorize().json()["auth_req_id"]
    approved_id = env.bc_authorize().json()["auth_req_id"]
    receipt = env.approve(approved_id)["receipt"]
    env.provider.store.close()

    reopened = build_provider(env.settings, notifier=env.notifier, clock=env.clock)
    store = reopened.store
    user = store.find_user("alice")
    assert user is not None and len(store.passkeys_for(user.user_id)) == 1
    from ciba_service.security import sha256_b64url

    pending = store.find_request_by_auth_req_id(sha256_b64url(pending_id))
    approved = store.find_request_by_auth_req_id(sha256_b64url(approved_id))
    assert pending is not None and pending.status is RequestStatus.PENDING
    assert approved is not None and approved.status is RequestStatus.APPROVED
    assert approved.receipt_id == receipt
    assert reopened.verify_receipt(receipt)["valid"] is True
    # the signing key survives too: same kid
    assert reopened.signing_key.kid == env.provider.signing_key.kid
    reopened.store.close()


def test_decide_and_issue_are_single_shot(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    request = env.request_for(auth_req_id)
    store = env.provider.store
    now = int(env.clock())
    assert store.decide(request.request_id, status=RequestStatus.DENIED, now=now) is True
    assert store.decide(request.request_id, status=RequestStatus.APPROVED, now=now) is False
    assert store.mark_issued(request.request_id, jti="j1") is False  # denied is not approved


def test_sign_count_compare_and_set(tmp_path: Path, env: Env) -> None:
    store = env.provider.store
    user = store.find_user("alice")
    assert user is not None
    [passkey] = store.passkeys_for(user.user_id)
    assert store.update_sign_count(passkey.credential_id, old=passkey.sign_count, new=passkey.sign_count + 5)
    assert not store.update_sign_count(passkey.credential_id, old=passkey.sign_count, new=passkey.sign_count + 6)


def test_memory_store_schema_is_created() -> None:
    store = SQLiteStore(":memory:")
    assert store.list_users() == []
    store.close()
