"""Operators manage users and passkeys (``ciba-service users disable|enable``, ``passkeys
list|revoke``), on SQLite and on a real Redis: a disabled user cannot be asked and cannot approve
what was pending, a revoked passkey no longer verifies, and each change is in the audit with who
made it, written in the same step as the change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ciba_service.core.model import AuditRecord
from ciba_service.core.security import b64url_encode
from ciba_service.server.admin import AdministrationError, UserAdministration
from ciba_service.store import RedisStore, SQLiteStore, Store
from tests.support.records import NOW, passkey, user
from tests.support.redis import fresh_prefix
from tests.support.service import BASE, Env, make_settings, open_env


@pytest.fixture(params=["sqlite", "redis"])
def any_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    overrides = {}
    if request.param == "redis":
        overrides = {
            "store": "redis",
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": fresh_prefix(),
        }
    with open_env(make_settings(tmp_path, **overrides)) as env:
        yield env


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "ciba.sqlite3")
    else:
        opened = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=fresh_prefix(), clock=lambda: NOW)
    yield opened
    opened.close()


def audit(record_id: str, *, at: int = NOW, subject: str = "u1", action: str = "user.disabled") -> AuditRecord:
    return AuditRecord(
        record_id=record_id, at=at, actor="ops", action=action, subject=subject, detail={"username": "alice"}
    )


# the store --------------------------------------------------------------------------------------
def test_set_user_enabled_records_the_change_with_it(store: Store) -> None:
    store.add_user(user())
    assert store.set_user_enabled("u1", enabled=False, audit=audit("a1")) is True
    found = store.get_user("u1")
    assert found is not None and found.enabled is False
    assert store.set_user_enabled("u1", enabled=True, audit=audit("a2", at=NOW + 1, action="user.enabled"))
    found = store.find_user("alice")
    assert found is not None and found.enabled is True
    assert [r.record_id for r in store.audit_records(limit=10)] == ["a2", "a1"]  # newest first
    assert store.audit_records(limit=10)[1] == audit("a1")


def test_unknown_user_changes_nothing_and_records_nothing(store: Store) -> None:
    assert store.set_user_enabled("nobody", enabled=False, audit=audit("a1")) is False
    assert store.audit_records(limit=10) == []
    assert store.get_user("nobody") is None


def test_revoke_passkey_deletes_it_for_its_user_only(store: Store) -> None:
    store.add_user(user())
    store.add_user(user("u2", "bob"))
    store.add_passkey(passkey())
    store.add_passkey(passkey(b"cred-2", created_at=NOW + 1))
    # Not bob's: nothing changes, nothing is recorded.
    assert store.revoke_passkey(b"\x00cred\xff", user_id="u2", audit=audit("a0", subject="u2")) is False
    assert store.audit_records(limit=10) == []
    assert store.revoke_passkey(b"\x00cred\xff", user_id="u1", audit=audit("a1", action="passkey.revoked")) is True
    assert [p.credential_id for p in store.passkeys_for("u1")] == [b"cred-2"]
    assert store.find_passkey(b"\x00cred\xff") is None
    assert store.revoke_passkey(b"\x00cred\xff", user_id="u1", audit=audit("a2")) is False  # gone already
    assert [r.record_id for r in store.audit_records(limit=10)] == ["a1"]


def test_audit_records_by_subject_and_limit(store: Store) -> None:
    for i in range(5):
        store.add_audit(audit(f"a{i}", at=NOW + i, subject="u1" if i % 2 else "u2"))
    assert [r.record_id for r in store.audit_records(limit=2)] == ["a4", "a3"]
    assert [r.record_id for r in store.audit_records(limit=10, subject="u1")] == ["a3", "a1"]
    assert store.audit_records(limit=10, subject="u9") == []


# through the service ------------------------------------------------------------------------------
def test_a_disabled_user_cannot_be_asked_nor_approve_what_was_pending(any_env: Env) -> None:
    env = any_env
    admin = UserAdministration(env.provider, actor="ops-oncall")
    pending = env.bc_authorize().json()["auth_req_id"]
    assert admin.set_enabled("alice", enabled=False) is True
    assert admin.set_enabled("alice", enabled=False) is False  # already: nothing recorded

    refused = env.bc_authorize()
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "unknown_user_id",
        "error_description": "user 'alice' is disabled and cannot be asked to approve",
    }
    request = env.request_for(pending)
    view = env.client.get(f"/approve/{request.approval_id}/details").json()
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    answer = env.client.post(f"/approve/{request.approval_id}/approve", json={"credential": credential})
    assert answer.status_code == 400
    assert "this user is disabled: the request cannot be approved" in answer.text
    assert env.token(pending).json()["error"] == "authorization_pending"

    assert admin.set_enabled("alice", enabled=True) is True
    assert env.bc_authorize().status_code == 200
    records = admin.audit(username="alice")
    assert [(r.action, r.actor) for r in records] == [
        ("user.enabled", "ops-oncall"),
        ("user.disabled", "ops-oncall"),
        ("passkey.enrolled", "alice (enrollment link)"),
    ]
    assert records[0].detail == {"username": "alice"}


def test_a_revoked_passkey_no_longer_verifies(any_env: Env) -> None:
    env = any_env
    admin = UserAdministration(env.provider, actor="ops")
    approved = env.approve(env.bc_authorize().json()["auth_req_id"])
    [info] = admin.passkeys("alice")
    pending = env.bc_authorize().json()["auth_req_id"]
    request = env.request_for(pending)
    view = env.client.get(f"/approve/{request.approval_id}/details").json()
    credential = env.authenticator.get(view["publicKey"], origin=BASE)  # signed before the revocation

    revoked = admin.revoke_passkey("alice", info.credential_id[:8])  # a unique prefix will do
    assert revoked.credential_id == info.credential_id
    assert admin.passkeys("alice") == []
    answer = env.client.post(f"/approve/{request.approval_id}/approve", json={"credential": credential})
    assert answer.status_code == 400
    # The user has no passkey left: she cannot be asked any more.
    assert env.bc_authorize().json()["error"] == "unknown_user_id"
    # An approval made with it stays verifiable: the receipt keeps its own copy of the key.
    assert env.provider.verify_receipt(approved["receipt"])["valid"] is True
    revoked_record, enrolled_record = admin.audit(username="alice")
    assert (revoked_record.action, revoked_record.actor, revoked_record.detail["credential_id"]) == (
        "passkey.revoked",
        "ops",
        info.credential_id,
    )
    # The passkey's enrollment (through the one-time link) is on record too.
    assert (enrolled_record.action, enrolled_record.actor, enrolled_record.detail["credential_id"]) == (
        "passkey.enrolled",
        "alice (enrollment link)",
        info.credential_id,
    )


def test_operator_mistakes_are_said_precisely(env: Env) -> None:
    admin = UserAdministration(env.provider, actor="ops")
    with pytest.raises(AdministrationError, match=r"no user 'bob' \(users: alice; add one with"):
        admin.set_enabled("bob", enabled=False)
    with pytest.raises(AdministrationError, match="at least its first 6 characters"):
        admin.revoke_passkey("alice", "abc")
    with pytest.raises(AdministrationError, match="user 'alice' has no passkey 'zzzzzzzz'"):
        admin.revoke_passkey("alice", "zzzzzzzz")
    admin.set_enabled("alice", enabled=False)
    with pytest.raises(AdministrationError, match="user 'alice' is disabled: enable it first"):
        admin.enrollment_link("alice")


def test_adding_a_user_and_links_are_audited(env: Env) -> None:
    admin = UserAdministration(env.provider, actor="ops")
    link = admin.add_user("bob", display_name="Bob B.")
    assert link.startswith(f"{BASE}/enroll/")
    admin.enrollment_link("bob")
    admin.set_user_code("bob", "123456")
    admin.set_user_code("bob", None)
    actions = [r.action for r in admin.audit(username="bob")]
    assert actions == ["user_code.cleared", "user_code.set", "user.enrollment_link", "user.added"]


def test_a_passkey_enrolled_through_the_link_is_audited(any_env: Env) -> None:
    env = any_env
    admin = UserAdministration(env.provider, actor="ops")
    link = admin.add_user("carol")
    token = link.rsplit("/", 1)[1]
    options = env.client.post(f"/enroll/{token}/options", json={}).json()
    credential = env.authenticator.create(options, origin=BASE)
    assert env.client.post(f"/enroll/{token}/complete", json={"credential": credential}).status_code == 200
    [info] = admin.passkeys("carol")
    enrolled, added = admin.audit(username="carol")
    assert (enrolled.action, enrolled.actor, enrolled.detail) == (
        "passkey.enrolled",
        "carol (enrollment link)",
        {"username": "carol", "credential_id": info.credential_id},
    )
    assert added.action == "user.added"


def test_passkey_ids_are_shown_as_typed_back(env: Env) -> None:
    admin = UserAdministration(env.provider, actor="ops")
    [info] = admin.passkeys("alice")
    alice = env.provider.store.find_user("alice")
    assert alice is not None
    [stored] = env.provider.store.passkeys_for(alice.user_id)
    assert info.credential_id == b64url_encode(stored.credential_id)


# the username in the token (opt-in) ---------------------------------------------------------------
def test_tokens_name_the_user_only_by_sub_unless_configured(tmp_path: Path) -> None:
    import jwt

    for claim in (None, "preferred_username"):
        with open_env(make_settings(tmp_path / str(claim), token_username_claim=claim)) as env:
            auth_req_id = env.bc_authorize().json()["auth_req_id"]
            env.approve(auth_req_id)
            answer = env.token(auth_req_id).json()
            access = jwt.decode(answer["access_token"], options={"verify_signature": False})
            id_token = jwt.decode(answer["id_token"], options={"verify_signature": False})
            if claim is None:
                assert "preferred_username" not in access and "preferred_username" not in id_token
            else:
                assert access["preferred_username"] == id_token["preferred_username"] == "alice"
                assert access["sub"] != "alice"  # sub stays the opaque user id


def test_the_username_claim_cannot_replace_a_claim_the_service_sets(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'sub' is a claim the service sets itself"):
        make_settings(tmp_path, token_username_claim="sub")


def test_keycloak_mode_leaves_users_and_passkeys_to_keycloak(env: Env) -> None:
    from types import SimpleNamespace

    mirrored = SimpleNamespace(store=env.provider.store, mode="keycloak", now=env.provider.now)
    admin = UserAdministration(mirrored, actor="ops")  # type: ignore[arg-type]
    with pytest.raises(AdministrationError, match="users and passkeys are Keycloak's in keycloak mode: disable"):
        admin.set_enabled("alice", enabled=False)
    with pytest.raises(AdministrationError, match="delete the credential in Keycloak"):
        admin.revoke_passkey("alice", "whatever")
    assert len(admin.passkeys("alice")) == 1  # listing the mirrored passkeys still works
    # Nothing refused was recorded (the one record is the fixture's own enrollment of alice).
    assert [r.action for r in admin.audit()] == ["passkey.enrolled"]
