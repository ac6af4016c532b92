"""The approval (DESIGN.md "The approval, precisely"): the binding document of a live request and
its challenge, the approval page data, every way an assertion must be refused, decision finality,
receipts and passkey enrollment. The binding document itself (fields, JCS, a known vector) is in
tests/core/test_binding.py."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sqlite3
import types
from typing import Any

import httpx
import pytest
import rfc8785
from fastapi.testclient import TestClient

from ciba_service.agent import softauthn
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.core import binding
from ciba_service.core.errors import ApprovalNotFound, AssertionRejected
from ciba_service.core.model import BackchannelRequest, RequestStatus
from ciba_service.core.security import b64url_encode
from tests.support.service import ACTION, BASE, Env, enroll

NO_STORE = "no-store"


def assert_approval_error(response: httpx.Response, *, status: int, error: str, description: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": error, "error_description": description}
    assert response.headers["cache-control"] == NO_STORE


def new_request(env: Env, **fields: str) -> tuple[str, BackchannelRequest, dict[str, Any]]:
    """A fresh pending request: its auth_req_id, stored request and approval page view."""
    response = env.bc_authorize(**fields)
    assert response.status_code == 200, response.text
    auth_req_id = response.json()["auth_req_id"]
    request = env.request_for(auth_req_id)
    view = env.client.get(f"/approve/{request.approval_id}/details").json()
    return auth_req_id, request, view


def post_approve(env: Env, approval_id: str, credential: Any) -> httpx.Response:
    return env.client.post(f"/approve/{approval_id}/approve", json={"credential": credential})


def assert_still_pending(env: Env, auth_req_id: str) -> None:
    request = env.request_for(auth_req_id)
    assert request.status is RequestStatus.PENDING
    assert request.receipt_id is None
    assert env.client.get(f"/approve/{request.approval_id}/details").json()["status"] == "pending"
    assert env.token(auth_req_id).json()["error"] == "authorization_pending"


def assert_rejected(env: Env, auth_req_id: str, credential: Any, description: str) -> None:
    request = env.request_for(auth_req_id)
    response = post_approve(env, request.approval_id, credential)
    assert_approval_error(response, status=400, error="assertion_rejected", description=description)
    assert_still_pending(env, auth_req_id)


def alice_passkeys(env: Env) -> list[Any]:
    user = env.provider.store.find_user("alice")
    assert user is not None
    return env.provider.store.passkeys_for(user.user_id)


def db(env: Env) -> sqlite3.Connection:
    return sqlite3.connect(env.settings.data_dir / "ciba.sqlite3", isolation_level=None)


# the binding document of a live request -----------------------------------------------------


def test_live_request_document_and_challenge(env: Env) -> None:
    _, request, view = new_request(env)
    document = view["binding_document"]
    assert document == binding.binding_document(request=request, issuer=BASE)
    assert set(document) == {
        "v",
        "iss",
        "client_id",
        "sub",
        "request_id",
        "binding_message",
        "authorization_details",
        "exp",
        "nonce",
    }
    assert document["authorization_details"] == ACTION
    assert document["sub"] == request.user_id
    assert document["exp"] == request.expires_at
    digest = hashlib.sha256(rfc8785.dumps(document)).digest()
    assert view["publicKey"]["challenge"] == b64url_encode(digest)


def test_identical_actions_get_different_challenges(env: Env) -> None:
    _, first, first_view = new_request(env)
    _, second, second_view = new_request(env)
    assert first.nonce != second.nonce
    assert first_view["publicKey"]["challenge"] != second_view["publicKey"]["challenge"]


# the approval page ---------------------------------------------------------------------------


def test_approval_page_details(env: Env) -> None:
    _, request, view = new_request(env)
    assert view["status"] == "pending"
    assert view["client_id"] == "agent-1"
    assert view["client_name"] == "Agent One"
    assert view["username"] == "alice"
    assert view["binding_message"] == "BM-1"
    assert view["display_name"] == "alice"
    assert view["service"] == {"display_name": "CIBA approvals", "logo_url": ""}
    assert view["entries"] == [
        {
            "text": "update IAM policy policy-42 (where: https://iam.example.test/)",
            "summary": "update IAM policy policy-42",
            # paths and labels only: the page reads each value from the signed entry
            "fields": [
                {"path": ["actions"], "label": None, "critical": True},
                {"path": ["identifier"], "label": "Policy", "critical": True},
                {"path": ["locations"], "label": None, "critical": True},
            ],
            "destructive": [],
            "detail": ACTION[0],
        }
    ]
    assert view["expires_at"] == request.expires_at
    assert view["server_time"] == int(env.clock.now)
    options = view["publicKey"]
    assert options["rpId"] == "localhost"
    assert options["userVerification"] == "required"
    assert options["timeout"] == 300_000
    assert [c["id"] for c in options["allowCredentials"]] == [
        b64url_encode(p.credential_id) for p in alice_passkeys(env)
    ]
    assert all(c["type"] == "public-key" for c in options["allowCredentials"])
    preimage = binding.canonical_preimage(binding.binding_document(request=request, issuer=BASE))
    assert options["challenge"] == b64url_encode(binding.challenge_for(preimage))


def test_allow_credentials_lists_every_passkey_of_the_user_and_no_other(env: Env) -> None:
    user = env.provider.store.find_user("alice")
    assert user is not None
    token = env.provider.new_enrollment_link(user).rsplit("/", 1)[1]
    options = env.client.post(f"/enroll/{token}/options", json={}).json()
    # the existing passkey is excluded from re-registration
    assert [c["id"] for c in options["excludeCredentials"]] == [
        b64url_encode(p.credential_id) for p in alice_passkeys(env)
    ]
    second = SoftAuthenticator()
    done = env.client.post(f"/enroll/{token}/complete", json={"credential": second.create(options, origin=BASE)})
    assert done.status_code == 200, done.text
    enroll(env.provider, env.client, "bob", SoftAuthenticator())
    _, _, view = new_request(env)
    ids = [c["id"] for c in view["publicKey"]["allowCredentials"]]
    assert len(ids) == 2
    assert sorted(ids) == sorted(b64url_encode(p.credential_id) for p in alice_passkeys(env))
    # and the second passkey approves
    _, request, view = new_request(env)
    assert post_approve(env, request.approval_id, second.get(view["publicKey"], origin=BASE)).status_code == 200


def test_approval_page_html_headers(env: Env) -> None:
    _, request, _ = new_request(env)
    response = env.client.get(f"/approve/{request.approval_id}")
    assert response.status_code == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == NO_STORE


def test_approve_succeeds_and_records_the_receipt(env: Env) -> None:
    auth_req_id, request, view = new_request(env)
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    response = post_approve(env, request.approval_id, credential)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == NO_STORE
    body = response.json()
    assert set(body) == {"status", "receipt"} and body["status"] == "approved"
    stored = env.request_for(auth_req_id)
    assert stored.status is RequestStatus.APPROVED
    assert stored.receipt_id == body["receipt"]
    assert stored.decided_at == int(env.clock())
    receipt = env.provider.store.get_receipt(body["receipt"])
    assert receipt is not None
    [passkey] = alice_passkeys(env)
    assert receipt.request_id == request.request_id
    assert receipt.user_id == request.user_id
    assert receipt.credential_id == passkey.credential_id
    assert receipt.credential_public_key == passkey.public_key
    assert receipt.preimage == binding.canonical_preimage(view["binding_document"])
    assert receipt.challenge == view["publicKey"]["challenge"]
    assert receipt.assertion == credential
    assert (receipt.rp_id, receipt.origin) == ("localhost", BASE)
    assert passkey.sign_count == 1
    after = env.client.get(f"/approve/{request.approval_id}/details").json()
    assert after["status"] == "approved"
    assert "publicKey" not in after


# refused assertions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["http://evil.test", "https://localhost:8000", "http://localhost:8001", "http://localhost"]
)
def test_wrong_origin_is_refused(env: Env, origin: str) -> None:
    auth_req_id, _, view = new_request(env)
    credential = env.authenticator.get(view["publicKey"], origin=origin)
    assert_rejected(
        env, auth_req_id, credential, f'Unexpected client data origin "{origin}", expected "http://localhost:8000"'
    )


def test_wrong_rp_id_is_refused(env: Env) -> None:
    # A phishing site's RP ID: the authenticator signs with its own rpIdHash.
    auth_req_id, _, view = new_request(env)
    phished = copy.deepcopy(env.authenticator)
    phished.credentials[0].rp_id = "evil.test"
    credential = phished.get({**view["publicKey"], "rpId": "evil.test"}, origin=BASE)
    assert_rejected(env, auth_req_id, credential, "Unexpected RP ID hash")


def test_user_verification_absent_is_refused(env: Env) -> None:
    auth_req_id, _, view = new_request(env)
    env.authenticator.user_verified = False  # user present (touched), not verified (no PIN/biometric)
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    assert_rejected(
        env, auth_req_id, credential, "User verification is required but user was not verified during authentication"
    )
    env.authenticator.user_verified = True
    env.clock.advance(2)
    env.approve(auth_req_id)  # the same passkey with UV then approves


def test_credential_of_another_user_is_refused(env: Env) -> None:
    bob = SoftAuthenticator()
    enroll(env.provider, env.client, "bob", bob)
    auth_req_id, _, view = new_request(env)
    # allowCredentials is only a hint to the browser; bob's authenticator ignores it
    credential = bob.get({**view["publicKey"], "allowCredentials": []}, origin=BASE)
    assert_rejected(env, auth_req_id, credential, "credential is not a passkey of the requested user")


def test_user_handle_of_another_user_is_refused(env: Env) -> None:
    auth_req_id, _, view = new_request(env)
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    credential["response"]["userHandle"] = b64url_encode(b"someone-else")
    assert_rejected(env, auth_req_id, credential, "userHandle does not match the requested user")


def test_replayed_assertion_is_refused(env: Env) -> None:
    _, request, view = new_request(env)
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    assert post_approve(env, request.approval_id, credential).status_code == 200
    assert_approval_error(
        post_approve(env, request.approval_id, credential),
        status=409,
        error="already_decided",
        description="this request was already decided (approved)",
    )
    # replayed on another request of the same user and action: the challenge differs
    other_id, _, _ = new_request(env)
    assert_rejected(env, other_id, credential, "Client data challenge was not expected challenge")


def test_stale_sign_count_is_refused(env: Env) -> None:
    clone = copy.deepcopy(env.authenticator)  # a cloned authenticator, counter 0
    env.approve(new_request(env)[0])  # the original signs with counter 1
    assert alice_passkeys(env)[0].sign_count == 1
    auth_req_id, _, view = new_request(env)
    credential = clone.get(view["publicKey"], origin=BASE)  # counter 1 again
    assert_rejected(env, auth_req_id, credential, "Response sign count of 1 was not greater than current count of 1")
    assert alice_passkeys(env)[0].sign_count == 1


def test_assertion_for_another_requests_challenge_is_refused(env: Env) -> None:
    first_id, _, first_view = new_request(env)
    second_id, _, _ = new_request(env)
    credential = env.authenticator.get(first_view["publicKey"], origin=BASE)
    assert_rejected(env, second_id, credential, "Client data challenge was not expected challenge")
    assert_still_pending(env, first_id)


def test_tampered_signature_is_refused(env: Env) -> None:
    auth_req_id, _, view = new_request(env)
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    signature = bytearray(base64.urlsafe_b64decode(credential["response"]["signature"] + "=="))
    signature[-1] ^= 0x01
    credential["response"]["signature"] = b64url_encode(bytes(signature))
    assert_rejected(env, auth_req_id, credential, "Could not verify authentication signature")


def test_registration_response_is_not_an_assertion(env: Env) -> None:
    auth_req_id, _, view = new_request(env)
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    client_data = json.loads(base64.urlsafe_b64decode(credential["response"]["clientDataJSON"] + "=="))
    client_data["type"] = "webauthn.create"
    credential["response"]["clientDataJSON"] = b64url_encode(json.dumps(client_data).encode())
    request = env.request_for(auth_req_id)
    response = post_approve(env, request.approval_id, credential)
    assert response.status_code == 400
    assert response.json()["error"] == "assertion_rejected"
    # py_webauthn renders the expected value through its enum's str(), whose form differs
    # between Python versions ("webauthn.get" / "ClientDataType.WEBAUTHN_GET"); the prefix is
    # what this test pins.
    assert response.json()["error_description"].startswith('Unexpected client data type "webauthn.create", expected "')
    assert_still_pending(env, auth_req_id)


def test_malformed_credential_is_refused(env: Env) -> None:
    auth_req_id, _, _ = new_request(env)
    assert_rejected(env, auth_req_id, {"id": "x"}, "malformed credential: Credential missing required rawId")


@pytest.mark.parametrize("credential", [None, "a-string", ["list"], 1])
def test_credential_must_be_an_object(env: Env, credential: Any) -> None:
    auth_req_id, request, _ = new_request(env)
    assert_approval_error(
        post_approve(env, request.approval_id, credential),
        status=400,
        error="approval_error",
        description="'credential' must be the PublicKeyCredential JSON",
    )
    assert_still_pending(env, auth_req_id)


# decisions are final, once ----------------------------------------------------------------


def test_approve_after_deny_is_already_decided(env: Env) -> None:
    auth_req_id, request, view = new_request(env)
    assert env.client.post(f"/approve/{request.approval_id}/deny", json={}).json() == {"status": "denied"}
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    assert_approval_error(
        post_approve(env, request.approval_id, credential),
        status=409,
        error="already_decided",
        description="this request was already decided (denied)",
    )
    assert env.request_for(auth_req_id).status is RequestStatus.DENIED


def test_deny_after_approve_is_already_decided(env: Env) -> None:
    auth_req_id, request, _ = new_request(env)
    env.approve(auth_req_id)
    assert_approval_error(
        env.client.post(f"/approve/{request.approval_id}/deny", json={}),
        status=409,
        error="already_decided",
        description="this request was already decided (approved)",
    )
    assert env.token(auth_req_id).status_code == 200
    assert_approval_error(
        env.client.post(f"/approve/{request.approval_id}/deny", json={}),
        status=409,
        error="already_decided",
        description="this request was already decided (issued)",
    )


def test_deny_twice_is_already_decided(env: Env) -> None:
    _, request, _ = new_request(env)
    assert env.client.post(f"/approve/{request.approval_id}/deny", json={}).status_code == 200
    assert_approval_error(
        env.client.post(f"/approve/{request.approval_id}/deny", json={}),
        status=409,
        error="already_decided",
        description="this request was already decided (denied)",
    )


def test_expired_request_cannot_be_decided(env: Env) -> None:
    auth_req_id, request, view = new_request(env)
    credential = env.authenticator.get(view["publicKey"], origin=BASE)  # signed in time...
    env.clock.advance(300)  # ...posted too late
    for response in (
        post_approve(env, request.approval_id, credential),
        env.client.post(f"/approve/{request.approval_id}/deny", json={}),
    ):
        assert_approval_error(response, status=410, error="expired", description="this request has expired")
    after = env.client.get(f"/approve/{request.approval_id}/details").json()
    assert after["status"] == "expired"
    assert "publicKey" not in after
    assert env.request_for(auth_req_id).status is RequestStatus.PENDING
    assert env.token(auth_req_id).json()["error"] == "expired_token"


def test_unknown_approval_id(env: Env) -> None:
    auth_req_id, _, _ = new_request(env)
    # the auth_req_id is not an approval key either
    for approval_id in ("unknown", auth_req_id):
        for response in (
            env.client.get(f"/approve/{approval_id}/details"),
            env.client.post(f"/approve/{approval_id}/approve", json={"credential": {"id": "x"}}),
            env.client.post(f"/approve/{approval_id}/deny", json={}),
        ):
            assert_approval_error(response, status=404, error="not_found", description="unknown approval request")


@pytest.mark.parametrize("action", ["deny", "approve"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {"credential": "x"}},
        {"content": b"{}"},
        {"content": b"{}", "headers": {"content-type": "text/plain"}},
    ],
    ids=["form", "no-content-type", "text-plain"],
)
def test_decisions_require_json_content_type(env: Env, action: str, kwargs: dict[str, Any]) -> None:
    # A cross-site form cannot send application/json without a CORS preflight.
    auth_req_id, request, _ = new_request(env)
    response = env.client.post(f"/approve/{request.approval_id}/{action}", **kwargs)
    assert_approval_error(
        response, status=400, error="approval_error", description="the request body must be application/json"
    )
    assert_still_pending(env, auth_req_id)


@pytest.mark.parametrize(
    ("content", "description"),
    [(b"{not json", "request body is not JSON"), (b"[]", "request body must be a JSON object")],
)
def test_decision_body_must_be_a_json_object(env: Env, content: bytes, description: str) -> None:
    auth_req_id, request, _ = new_request(env)
    response = env.client.post(
        f"/approve/{request.approval_id}/deny", content=content, headers={"content-type": "application/json"}
    )
    assert_approval_error(response, status=400, error="approval_error", description=description)
    assert_still_pending(env, auth_req_id)


# receipts ------------------------------------------------------------------------------------


def _approved_receipt(env: Env) -> tuple[str, dict[str, Any]]:
    auth_req_id, _, view = new_request(env)
    receipt_id = env.approve(auth_req_id)["receipt"]
    return receipt_id, view


def test_receipt_verifies_and_returns_the_document(env: Env) -> None:
    receipt_id, view = _approved_receipt(env)
    assert env.provider.verify_receipt(receipt_id) == {
        "receipt": receipt_id,
        "valid": True,
        "binding_document": view["binding_document"],
    }


def test_tampered_receipt_preimage_fails(env: Env) -> None:
    receipt_id, view = _approved_receipt(env)
    forged = {**view["binding_document"], "authorization_details": [{**ACTION[0], "actions": ["delete"]}]}
    with db(env) as conn:
        conn.execute("UPDATE receipts SET preimage = ? WHERE receipt_id = ?", (rfc8785.dumps(forged), receipt_id))
    with pytest.raises(AssertionRejected) as info:
        env.provider.verify_receipt(receipt_id)
    assert info.value.description == "receipt challenge is not the SHA-256 of its preimage"


def test_tampered_receipt_preimage_and_challenge_fail(env: Env) -> None:
    # A forger who also recomputes the challenge still lacks the user's signature over it.
    receipt_id, view = _approved_receipt(env)
    forged = rfc8785.dumps({**view["binding_document"], "binding_message": "BM-2"})
    challenge = b64url_encode(hashlib.sha256(forged).digest())
    with db(env) as conn:
        conn.execute(
            "UPDATE receipts SET preimage = ?, challenge = ? WHERE receipt_id = ?", (forged, challenge, receipt_id)
        )
    with pytest.raises(AssertionRejected) as info:
        env.provider.verify_receipt(receipt_id)
    assert info.value.description == "receipt does not verify: Client data challenge was not expected challenge"


def test_receipt_with_another_public_key_fails(env: Env) -> None:
    receipt_id, _ = _approved_receipt(env)
    enroll(env.provider, env.client, "bob", SoftAuthenticator())
    bob = env.provider.store.find_user("bob")
    assert bob is not None
    [bob_key] = env.provider.store.passkeys_for(bob.user_id)
    with db(env) as conn:
        conn.execute(
            "UPDATE receipts SET credential_public_key = ? WHERE receipt_id = ?", (bob_key.public_key, receipt_id)
        )
    with pytest.raises(AssertionRejected) as info:
        env.provider.verify_receipt(receipt_id)
    assert info.value.description == "receipt does not verify: Could not verify authentication signature"


def test_unknown_receipt(env: Env) -> None:
    with pytest.raises(ApprovalNotFound) as info:
        env.provider.verify_receipt("no-such-receipt")
    assert info.value.description == "unknown receipt"


# enrollment ---------------------------------------------------------------------------------


def enrollment_token(env: Env, username: str) -> str:
    _, link = env.provider.add_user(username=username)
    assert link.startswith(f"{BASE}/enroll/")
    return link.rsplit("/", 1)[1]


def test_enrollment_link_works_once(env: Env) -> None:
    token = enrollment_token(env, "erin")
    assert env.client.get(f"/enroll/{token}/details").json() == {
        "username": "erin",
        "display_name": "erin",
        "service": {"display_name": "CIBA approvals", "logo_url": ""},
    }
    options = env.client.post(f"/enroll/{token}/options", json={}).json()
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["rp"]["id"] == "localhost"
    erin = SoftAuthenticator()
    done = env.client.post(f"/enroll/{token}/complete", json={"credential": erin.create(options, origin=BASE)})
    assert done.status_code == 200
    assert done.json() == {"status": "enrolled", "username": "erin"}
    used = "this enrollment link has been used"
    again = env.client.post(
        f"/enroll/{token}/complete", json={"credential": SoftAuthenticator().create(options, origin=BASE)}
    )
    assert_approval_error(again, status=409, error="already_decided", description=used)
    assert_approval_error(
        env.client.post(f"/enroll/{token}/options", json={}), status=409, error="already_decided", description=used
    )
    assert_approval_error(
        env.client.get(f"/enroll/{token}/details"), status=409, error="already_decided", description=used
    )
    user = env.provider.store.find_user("erin")
    assert user is not None and len(env.provider.store.passkeys_for(user.user_id)) == 1
    # the enrolled passkey can approve
    auth_req_id, _, _ = new_request(env, login_hint="erin")
    request = env.request_for(auth_req_id)
    view = env.client.get(f"/approve/{request.approval_id}/details").json()
    assert post_approve(env, request.approval_id, erin.get(view["publicKey"], origin=BASE)).status_code == 200


def test_enrollment_link_expires(env: Env) -> None:
    token = enrollment_token(env, "erin")
    env.clock.advance(env.settings.enrollment_ttl - 1)
    options = env.client.post(f"/enroll/{token}/options", json={}).json()
    env.clock.advance(1)
    expired = "this enrollment link has expired"
    assert_approval_error(env.client.get(f"/enroll/{token}/details"), status=410, error="expired", description=expired)
    assert_approval_error(
        env.client.post(f"/enroll/{token}/options", json={}), status=410, error="expired", description=expired
    )
    late = env.client.post(
        f"/enroll/{token}/complete", json={"credential": SoftAuthenticator().create(options, origin=BASE)}
    )
    assert_approval_error(late, status=410, error="expired", description=expired)


def test_unknown_enrollment_link(env: Env) -> None:
    assert_approval_error(
        env.client.get("/enroll/nope/details"), status=404, error="not_found", description="unknown enrollment link"
    )


def test_enrollment_needs_options_first(env: Env) -> None:
    token = enrollment_token(env, "erin")
    fake_options = {
        "rp": {"id": "localhost", "name": "x"},
        "user": {"id": b64url_encode(b"x"), "name": "erin", "displayName": "erin"},
        "challenge": b64url_encode(b"c" * 32),
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
    }
    response = env.client.post(
        f"/enroll/{token}/complete", json={"credential": SoftAuthenticator().create(fake_options, origin=BASE)}
    )
    assert_approval_error(
        response, status=400, error="enrollment_error", description="ask for registration options first"
    )


@pytest.mark.parametrize(
    ("mutate", "description"),
    [
        (
            {"origin": "http://evil.test"},
            'registration rejected: Unexpected client data origin "http://evil.test", expected "http://localhost:8000"',
        ),
        (
            {"user_verified": False},
            "registration rejected: User verification is required but user was not verified during attestation",
        ),
        ({"rp_id": "evil.test"}, "registration rejected: Unexpected RP ID hash"),
        (
            {"challenge": b64url_encode(b"x" * 32)},
            "registration rejected: Client data challenge was not expected challenge",
        ),
    ],
    ids=["wrong-origin", "no-uv", "wrong-rp-id", "wrong-challenge"],
)
def test_bad_registration_is_refused_and_the_link_stays_usable(
    env: Env, mutate: dict[str, Any], description: str
) -> None:
    token = enrollment_token(env, "erin")
    options = env.client.post(f"/enroll/{token}/options", json={}).json()
    bad = SoftAuthenticator(user_verified=mutate.get("user_verified", True))
    bad_options = copy.deepcopy(options)
    if "rp_id" in mutate:
        bad_options["rp"]["id"] = mutate["rp_id"]
    if "challenge" in mutate:
        bad_options["challenge"] = mutate["challenge"]
    credential = bad.create(bad_options, origin=mutate.get("origin", BASE))
    response = env.client.post(f"/enroll/{token}/complete", json={"credential": credential})
    assert_approval_error(response, status=400, error="enrollment_error", description=description)
    user = env.provider.store.find_user("erin")
    assert user is not None and env.provider.store.passkeys_for(user.user_id) == []
    good = env.client.post(
        f"/enroll/{token}/complete", json={"credential": SoftAuthenticator().create(options, origin=BASE)}
    )
    assert good.status_code == 200, good.text


def test_registering_an_existing_credential_id_is_refused(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # WebAuthn L3 7.1 step 26: "Verify that the credentialId is not yet registered for any
    # user." An authenticator (or attacker) reusing alice's credential id for erin must get a
    # clean refusal, and erin's link must not be burnt by it.
    [alice_key] = alice_passkeys(env)
    monkeypatch.setattr(softauthn, "secrets", types.SimpleNamespace(token_bytes=lambda n: alice_key.credential_id))
    token = enrollment_token(env, "erin")
    options = env.client.post(f"/enroll/{token}/options", json={}).json()
    credential = SoftAuthenticator().create(options, origin=BASE)
    monkeypatch.undo()
    client = TestClient(env.client.app, base_url=BASE, raise_server_exceptions=False)
    response = client.post(f"/enroll/{token}/complete", json={"credential": credential})
    assert_approval_error(
        response,
        status=400,
        error="enrollment_error",
        description="registration rejected: credential is already registered",
    )
    good = client.post(
        f"/enroll/{token}/complete", json={"credential": SoftAuthenticator().create(options, origin=BASE)}
    )
    assert good.status_code == 200, good.text


def test_oversized_and_deeply_nested_bodies_are_refused_not_crashing(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    approval_id = env.request_for(auth_req_id).approval_id
    deep = env.client.post(
        f"/approve/{approval_id}/approve",
        content=b"[" * 20_000 + b"]" * 20_000,
        headers={"Content-Type": "application/json"},
    )
    assert deep.status_code == 400
    assert deep.json() == {"error": "approval_error", "error_description": "request body is not JSON"}
    big = env.client.post(
        f"/approve/{approval_id}/approve", content=b" " * 70_000, headers={"Content-Type": "application/json"}
    )
    assert big.json() == {"error": "approval_error", "error_description": "request body too large"}
    form = env.client.post(
        "/bc-authorize", content=b"a=" + b"x" * 70_000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.json() == {"error": "invalid_request", "error_description": "request body too large"}
